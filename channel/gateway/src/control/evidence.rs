//! What a channel's readings rest on, as the control API shows it and as `channel open` asks
//! for it (`specs/readings.md`, "Evidence, a term of the channel").

/// A channel's evidence as a person reads it: whose readings are signed by which meter.
pub(crate) fn evidence_text(e: &gridchan_channel::Evidence, we: gridchan_channel::Party) -> String {
    let short = |m: &gridchan_channel::NodeId| hex::encode(&m.to_bytes()[..6]);
    let (ours, theirs) = match we {
        gridchan_channel::Party::A => (e.meter_a, e.meter_b),
        gridchan_channel::Party::B => (e.meter_b, e.meter_a),
    };
    match (ours, theirs) {
        (None, None) => "none (each side's readings are its word)".into(),
        (Some(o), Some(t)) => format!("signed (our meter {}.., theirs {}..)", short(&o), short(&t)),
        (Some(o), None) => format!("ours signed by meter {}.., theirs their word", short(&o)),
        (None, Some(t)) => format!("theirs signed by meter {}.., ours our word", short(&t)),
    }
}

/// The evidence a channel we open names: `requested` (`none`, `signed`, or left out: each
/// known meter signs its side's readings), our meter, and the neighbour's.
pub(super) fn evidence_for(
    requested: Option<&str>,
    own: Option<gridchan_channel::NodeId>,
    theirs: Option<gridchan_channel::NodeId>,
) -> Result<gridchan_channel::Evidence, String> {
    use gridchan_channel::Evidence;
    match (requested, own, theirs) {
        (Some("signed"), Some(o), Some(t)) => Ok(Evidence::signed(o, t)),
        // Left out: whichever meters are known sign their side's readings.
        (None, own, theirs) => Ok(Evidence {
            meter_a: own,
            meter_b: theirs,
        }),
        (Some("none"), _, _) => Ok(Evidence::NONE),
        (Some("signed"), None, _) => Err(
            "--evidence signed needs this home's meter to sign its readings: add a [signing_meter] section to the config (see `gridchan init`)".into(),
        ),
        (Some("signed"), _, None) => Err(
            "--evidence signed needs the neighbour's meter key: give --peer-meter KEY, or name it as `meter` in the neighbour's [[peers]] section".into(),
        ),
        (Some(other), _, _) => Err(format!(
            "--evidence {other:?}: expected \"none\" (each side's word) or \"signed\" (each side's meter signs)"
        )),
    }
}

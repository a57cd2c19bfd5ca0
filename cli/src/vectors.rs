//! `gridchan vectors`: the signed-state test vectors, as published in specs/.

/// The vectors as JSON.
pub fn render() -> String {
    gridchan_channel::vectors::render()
}

/// `specs/vectors/frames.json`: a frame of every message of the gateway wire, the ledger's RPC
/// and the tower's RPC.
pub fn frames() -> String {
    gridchan_channel::frame_vectors::render(&[
        ("channel", gridchan_channel::frame_vectors::compute()),
        ("ledger", gridchan_chain::frame_vectors::compute()),
        ("watchtower", gridchan_watchtower::frame_vectors::compute()),
    ])
}

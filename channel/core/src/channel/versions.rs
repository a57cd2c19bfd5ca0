//! Versions: which one comes next, which a peer may claim, and the one rule every signature
//! obeys (never at or below our highest signed version).

use super::*;

impl Channel {
    /// Every signature this channel makes above version 0 goes through here (version 0 is
    /// signed only as the channel is created, before anything else can be). Two states signed
    /// at one version would let the peer register whichever pays it more, so a version at or
    /// below our highest signed one is refused in every build, whatever the caller checked;
    /// the new highest is recorded before the signature exists, and the record that carries it
    /// is persisted before the signature leaves (the outbox holds it).
    pub(super) fn sign_at<T>(
        &mut self,
        version: Version,
        ctx: &Ctx,
        sign: impl FnOnce(&Keys) -> T,
    ) -> Result<T, Refusal> {
        if version <= self.highest_signed {
            return Err(Refusal::VersionBurned {
                highest: self.highest_signed.0,
            });
        }
        self.highest_signed = version;
        Ok(sign(&ctx.keys))
    }

    /// The version the next proposal must carry: one above anything either party has signed.
    pub(super) fn next_version(&self) -> Option<Version> {
        let current = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default();
        current
            .max(self.highest_signed)
            .max(self.peer_highest)
            .next()
    }

    /// The version a peer proposal must carry: the next version, or the peer's highest known
    /// version again if we never signed at it (the peer repeats a proposal whose refusal it
    /// never received). Countersigning at that version is safe: our own highest signed version
    /// is below it.
    pub(super) fn expected_peer_version(&self, offered: Version) -> Result<Version, Refusal> {
        let current = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default();
        let repeat = self.peer_highest;
        if offered == repeat && repeat > current.max(self.highest_signed) {
            return Ok(repeat);
        }
        self.next_version().ok_or(Refusal::Overflow)
    }

    /// Refuses a version the peer claims to have signed that lies more than
    /// [`MAX_VERSION_LEAD`] beyond every version we know of: believing it would leave us
    /// nothing to propose at (or wrap). After [`MAX_IMPLAUSIBLE_CLAIMS`] of them the channel
    /// closes on the ledger with our newest state.
    pub(super) fn check_plausible(
        &mut self,
        claimed: Version,
        what: &'static str,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        let known = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default()
            .max(self.highest_signed)
            .max(self.peer_highest);
        if claimed.0 <= known.0.saturating_add(MAX_VERSION_LEAD) {
            return Ok(());
        }
        self.implausible = self.implausible.saturating_add(1);
        let closing = self.implausible >= MAX_IMPLAUSIBLE_CLAIMS
            && matches!(self.phase, Phase::Open | Phase::Closing);
        if closing {
            self.force_close(ctx);
        }
        Err(Violation::Implausible {
            what,
            claimed: claimed.0,
            known: known.0,
            lead: MAX_VERSION_LEAD,
            closing: ClosingOnLedger(closing.then_some(self.implausible)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Precomputed, Signer};
    use crate::vectors;

    /// The rule holds in release builds too (tests run without debug assertions in
    /// `--release`): a signature at or below our highest version is refused, whoever asks.
    #[test]
    fn no_signature_at_or_below_the_highest_signed_version() {
        let a = Signer::new(&vectors::secret(1), &[7; 32]).unwrap();
        let b = Signer::new(&vectors::secret(2), &[8; 32]).unwrap();
        let params = vectors::params(
            &a,
            &b,
            crate::Tariff::Flat(crate::PricePerKwh(180_000)),
            (1_000, 1_000),
        );
        let policy = Policy::default();
        let mut out = Outbox::default();
        let mut ctx = Ctx {
            keys: Keys {
                signer: &a,
                ahead: &Precomputed::NONE,
            },
            policy: &policy,
            now_ms: 0,
            out: &mut out,
        };
        let mut ch = Channel::open(params, &mut ctx);
        assert_eq!(ch.sign_at(Version(3), &ctx, |_| ()), Ok(()));
        assert_eq!(ch.highest_signed, Version(3));
        for burned in [0, 1, 3] {
            let mut signed = false;
            let refused = ch.sign_at(Version(burned), &ctx, |_| signed = true);
            assert_eq!(refused, Err(Refusal::VersionBurned { highest: 3 }));
            assert!(!signed, "nothing is signed at version {burned}");
        }
        assert_eq!(ch.highest_signed, Version(3));
        assert_eq!(ch.sign_at(Version(4), &ctx, |_| ()), Ok(()));
    }
}

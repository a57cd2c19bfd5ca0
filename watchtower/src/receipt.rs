//! Receipts: the tower's signature over what it was given, so a client can prove it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use gridchan_channel::{ChannelId, NodeId, Signature, Signer, Version};

const RECEIPT_DOMAIN: &[u8] = b"gridchan/watchtower-receipt/v1";

/// "Tower `tower` holds version `version` of `channel`, the state with digest `state_digest`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tower: NodeId,
    pub channel: ChannelId,
    pub version: Version,
    pub state_digest: [u8; 32],
    pub sig: Signature,
}

fn digest(tower: &NodeId, channel: &ChannelId, version: Version, state: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(RECEIPT_DOMAIN);
    h.update(tower.to_bytes());
    h.update(channel.0);
    h.update(version.0.to_be_bytes());
    h.update(state);
    h.finalize().into()
}

impl Receipt {
    pub fn sign(
        signer: &Signer,
        channel: ChannelId,
        version: Version,
        state_digest: [u8; 32],
    ) -> Receipt {
        let tower = signer.id();
        let sig = signer.sign(&digest(&tower, &channel, version, &state_digest));
        Receipt {
            tower,
            channel,
            version,
            state_digest,
            sig,
        }
    }

    /// Checks the tower's signature.
    pub fn verify(&self) -> bool {
        let d = digest(&self.tower, &self.channel, self.version, &self.state_digest);
        self.sig.verify(&d, &self.tower).is_ok()
    }
}

const BATCH_DOMAIN: &[u8] = b"gridchan/watchtower-batch-receipt/v1";

/// "Tower `tower` holds each of these states": one signature for a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReceipt {
    pub tower: NodeId,
    /// (channel, version, state digest), in the order of the request.
    pub entries: Vec<(ChannelId, Version, [u8; 32])>,
    pub sig: Signature,
}

fn batch_digest(tower: &NodeId, entries: &[(ChannelId, Version, [u8; 32])]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BATCH_DOMAIN);
    h.update(tower.to_bytes());
    h.update((entries.len() as u64).to_be_bytes());
    for (c, v, d) in entries {
        h.update(c.0);
        h.update(v.0.to_be_bytes());
        h.update(d);
    }
    h.finalize().into()
}

impl BatchReceipt {
    pub fn sign(signer: &Signer, entries: Vec<(ChannelId, Version, [u8; 32])>) -> BatchReceipt {
        let tower = signer.id();
        let sig = signer.sign(&batch_digest(&tower, &entries));
        BatchReceipt {
            tower,
            entries,
            sig,
        }
    }

    pub fn verify(&self) -> bool {
        self.sig
            .verify(&batch_digest(&self.tower, &self.entries), &self.tower)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_verifies_and_a_changed_one_does_not() {
        let tower = Signer::new(&[5; 32], &[0; 32]).unwrap();
        let r = Receipt::sign(&tower, ChannelId([1; 32]), Version(7), [2; 32]);
        assert!(r.verify());
        let mut later = r.clone();
        later.version = Version(8);
        assert!(!later.verify());
        let mut other = r.clone();
        other.tower = Signer::new(&[6; 32], &[0; 32]).unwrap().id();
        assert!(!other.verify());
    }

    #[test]
    fn a_batch_receipt_covers_exactly_its_entries() {
        let tower = Signer::new(&[5; 32], &[0; 32]).unwrap();
        let entries = vec![
            (ChannelId([1; 32]), Version(3), [2; 32]),
            (ChannelId([4; 32]), Version(9), [5; 32]),
        ];
        let r = BatchReceipt::sign(&tower, entries.clone());
        assert!(r.verify());
        let mut fewer = r.clone();
        fewer.entries.pop();
        assert!(!fewer.verify());
        let mut swapped = r.clone();
        swapped.entries.reverse();
        assert!(!swapped.verify());
    }
}

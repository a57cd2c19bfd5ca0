//! Identities and signatures: secp256k1 keys, Ethereum-style addresses, and 65-byte recoverable
//! ECDSA signatures `(r, s, v)` with low `s` and `v` in {27, 28}, as `ecrecover` takes them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey, SignOnly, VerifyOnly};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_big_array::BigArray;
use sha3::{Digest, Keccak256};

/// Half the order of the secp256k1 group: a signature's `s` must not exceed it.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

fn verifier() -> &'static Secp256k1<VerifyOnly> {
    static CONTEXT: OnceLock<Secp256k1<VerifyOnly>> = OnceLock::new();
    CONTEXT.get_or_init(Secp256k1::verification_only)
}

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The bytes are not a valid compressed secp256k1 public key.
    #[error("not a valid secp256k1 public key")]
    InvalidPublicKey,
    /// The bytes are not a valid secp256k1 secret key.
    #[error("not a valid secp256k1 secret key")]
    InvalidSecretKey,
    /// `v` is not 27 or 28.
    #[error("signature recovery byte v must be 27 or 28")]
    InvalidRecoveryByte,
    /// `s` is in the upper half of the group order (the malleable twin of a valid signature).
    #[error("signature has a high s value")]
    HighS,
    /// `r` or `s` is out of range, or no key can be recovered.
    #[error("malformed signature")]
    Malformed,
    /// The signature is valid but was made by another key.
    #[error("signature is not from the expected key")]
    WrongSigner,
}

/// A node's identity: its secp256k1 public key, shown as 66 hex digits (compressed form).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(PublicKey);

impl NodeId {
    pub fn from_public_key(key: PublicKey) -> NodeId {
        NodeId(key)
    }

    pub fn from_bytes(bytes: &[u8; 33]) -> Result<NodeId, CryptoError> {
        PublicKey::from_slice(bytes)
            .map(NodeId)
            .map_err(|_| CryptoError::InvalidPublicKey)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }

    /// The 64-byte uncompressed key `x || y` (without the `0x04` prefix): what hashes to the
    /// key's [`Address`], and how an EVM contract receives a key.
    pub fn to_xy(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.0.serialize_uncompressed()[1..]);
        out
    }

    /// The key from its 64-byte uncompressed form `x || y`.
    pub fn from_xy(xy: &[u8; 64]) -> Result<NodeId, CryptoError> {
        let mut bytes = [0u8; 65];
        bytes[0] = 4;
        bytes[1..].copy_from_slice(xy);
        PublicKey::from_slice(&bytes)
            .map(NodeId)
            .map_err(|_| CryptoError::InvalidPublicKey)
    }

    /// The Ethereum-style address: the last 20 bytes of keccak256 of the uncompressed key
    /// without its 0x04 prefix. This is what `ecrecover` yields for this key.
    pub fn address(&self) -> Address {
        let uncompressed = self.0.serialize_uncompressed();
        let hash = Keccak256::digest(&uncompressed[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &hex::encode(self.to_bytes())[..10])
    }
}

impl FromStr for NodeId {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<NodeId, CryptoError> {
        let bytes = hex::decode(s).map_err(|_| CryptoError::InvalidPublicKey)?;
        let bytes: [u8; 33] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        NodeId::from_bytes(&bytes)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BigArray::serialize(&self.to_bytes(), serializer)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let bytes: [u8; 33] = BigArray::deserialize(deserializer)?;
        NodeId::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// A 20-byte Ethereum-style address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub [u8; 20]);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A recoverable ECDSA signature over a 32-byte digest: `r || s || v`, 65 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "BigArray")] pub [u8; 65]);

impl Signature {
    pub fn r(&self) -> &[u8] {
        &self.0[..32]
    }

    pub fn s(&self) -> &[u8] {
        &self.0[32..64]
    }

    pub fn v(&self) -> u8 {
        self.0[64]
    }

    /// Checks that this signature over `digest` was made by `signer`, with the rules an EVM
    /// contract applies: `v` in {27, 28}, low `s`, the recovered key equals `signer`.
    pub fn verify(&self, digest: &[u8; 32], signer: &NodeId) -> Result<(), CryptoError> {
        self.verify_known(digest, signer, &Recovered::NONE)
    }

    /// [`Signature::verify`], taking the recovery from `known` when a host made it ahead.
    pub fn verify_known(
        &self,
        digest: &[u8; 32],
        signer: &NodeId,
        known: &Recovered,
    ) -> Result<(), CryptoError> {
        if self.recover_known(digest, known)? == *signer {
            Ok(())
        } else {
            Err(CryptoError::WrongSigner)
        }
    }

    /// [`Signature::recover`], taken from `known` when a host made it ahead.
    pub fn recover_known(
        &self,
        digest: &[u8; 32],
        known: &Recovered,
    ) -> Result<NodeId, CryptoError> {
        match known.0.get(&(*digest, self.0)) {
            Some(result) => result.clone(),
            None => self.recover(digest),
        }
    }

    /// The key that made this signature over `digest`.
    pub fn recover(&self, digest: &[u8; 32]) -> Result<NodeId, CryptoError> {
        let recid = match self.v() {
            27 => RecoveryId::Zero,
            28 => RecoveryId::One,
            _ => return Err(CryptoError::InvalidRecoveryByte),
        };
        if self.s() > &HALF_ORDER[..] {
            return Err(CryptoError::HighS);
        }
        self.recover_now(digest, recid)
    }

    fn recover_now(&self, digest: &[u8; 32], recid: RecoveryId) -> Result<NodeId, CryptoError> {
        let sig = RecoverableSignature::from_compact(&self.0[..64], recid)
            .map_err(|_| CryptoError::Malformed)?;
        verifier()
            .recover_ecdsa(Message::from_digest(*digest), &sig)
            .map(NodeId)
            .map_err(|_| CryptoError::Malformed)
    }
}

/// Work a host did ahead of the core, on a pool of its own, handed in with an input
/// ([`crate::Node::handle_with`]): the core finds each result here instead of computing it on
/// one thread. Only the very same signing and recovery make its entries: a memo, not a shortcut
/// around a check.
pub struct Precomputed {
    recovered: Recovered,
    presigned: Presigned,
}

impl Precomputed {
    /// Nothing done ahead: every signature is made and every key recovered when needed.
    pub const NONE: Precomputed = Precomputed {
        recovered: Recovered::NONE,
        presigned: Presigned::NONE,
    };

    pub fn new(recovered: Recovered, presigned: Presigned) -> Precomputed {
        Precomputed {
            recovered,
            presigned,
        }
    }

    /// The recoveries made ahead, for checks outside the channels (a market's book).
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }
}

/// What the core signs and checks with for one input: the node's signer and the work done
/// ahead.
pub(crate) struct Keys<'a> {
    pub signer: &'a Signer,
    pub ahead: &'a Precomputed,
}

impl Keys<'_> {
    /// The signature [`Signer::sign`] makes over `digest`, taken from the work done ahead when
    /// it is there.
    pub fn sign(&self, digest: &[u8; 32]) -> Signature {
        let ahead = &self.ahead.presigned;
        let known = (ahead.signer == Some(self.signer.id))
            .then(|| ahead.sigs.get(digest).copied())
            .flatten();
        known.unwrap_or_else(|| self.signer.sign(digest))
    }

    /// Recoveries made ahead, for [`Signature::verify_known`].
    pub fn recovered(&self) -> &Recovered {
        &self.ahead.recovered
    }

    pub fn id(&self) -> NodeId {
        self.signer.id
    }
}

/// Signatures made ahead of time, in parallel, by one signer (see [`Signer::presign`]).
pub struct Presigned {
    signer: Option<NodeId>,
    sigs: BTreeMap<[u8; 32], Signature>,
}

/// One signature made ahead by [`Signer::presign_one`]: a piece of work a host can run on any
/// thread of its own pool, then gather with [`Presigned::collect`].
pub struct PresignedOne {
    signer: NodeId,
    digest: [u8; 32],
    sig: Signature,
}

impl Presigned {
    /// Gathers signatures made by [`Signer::presign_one`] of `signer` (others are left out).
    pub fn collect(signer: &Signer, parts: impl IntoIterator<Item = PresignedOne>) -> Presigned {
        Presigned {
            signer: Some(signer.id),
            sigs: parts
                .into_iter()
                .filter(|p| p.signer == signer.id)
                .map(|p| (p.digest, p.sig))
                .collect(),
        }
    }

    /// No signatures.
    pub const NONE: Presigned = Presigned {
        signer: None,
        sigs: BTreeMap::new(),
    };
}

/// Keys recovered ahead of time, in parallel: a host that receives a batch of signed messages
/// spreads the costliest step of checking them over its cores, then lets the state machine
/// check them one by one as usual, which finds each result here instead of computing it again.
/// Only [`Recovered::one`] makes its entries, by running the very same
/// recovery: a memo, not a shortcut around a check.
pub struct Recovered(BTreeMap<([u8; 32], [u8; 65]), Result<NodeId, CryptoError>>);

/// One recovery made by [`Recovered::one`]: a piece of work a host can run on any thread of its
/// own pool, then gather with [`Recovered::collect`] (and keep, to gather again: the same
/// signature recovers to the same key).
#[derive(Clone)]
pub struct RecoveredOne {
    key: ([u8; 32], [u8; 65]),
    result: Result<NodeId, CryptoError>,
}

impl Recovered {
    /// Recovers the signer of `sig` over `digest`.
    pub fn one(digest: &[u8; 32], sig: &Signature) -> RecoveredOne {
        RecoveredOne {
            key: (*digest, sig.0),
            result: sig.recover(digest),
        }
    }

    /// Gathers recoveries made by [`Recovered::one`].
    pub fn collect(parts: impl IntoIterator<Item = RecoveredOne>) -> Recovered {
        Recovered(parts.into_iter().map(|p| (p.key, p.result)).collect())
    }

    /// How many signatures it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// No recoveries.
    pub const NONE: Recovered = Recovered(BTreeMap::new());
}

/// Plain ECDSA verification of `(r, s)` against `key`, ignoring `v`: what a protocol without
/// `ecrecover` compatibility would pay. Benchmarks compare it with [`Signature::verify`].
pub fn verify_plain(sig: &Signature, digest: &[u8; 32], key: &NodeId) -> bool {
    secp256k1::ecdsa::Signature::from_compact(&sig.0[..64])
        .and_then(|s| verifier().verify_ecdsa(Message::from_digest(*digest), &s, &key.0))
        .is_ok()
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..6]))
    }
}

/// A node's secret key with a signing context. The context is randomized once, from a seed the
/// host supplies, as blinding against side channels (see ARCHITECTURE.md, "Signatures").
pub struct Signer {
    context: Secp256k1<SignOnly>,
    secret: SecretKey,
    id: NodeId,
}

impl Signer {
    pub fn new(secret: &[u8; 32], blinding_seed: &[u8; 32]) -> Result<Signer, CryptoError> {
        let secret =
            SecretKey::from_byte_array(*secret).map_err(|_| CryptoError::InvalidSecretKey)?;
        let mut context = Secp256k1::signing_only();
        context.seeded_randomize(blinding_seed);
        let id = NodeId(PublicKey::from_secret_key(&context, &secret));
        Ok(Signer {
            context,
            secret,
            id,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Another signer with the same key and a context blinded with a new seed, for a second
    /// component (the transport, say) that signs on its own.
    pub fn duplicate(&self, blinding_seed: &[u8; 32]) -> Signer {
        let mut context = Secp256k1::signing_only();
        context.seeded_randomize(blinding_seed);
        Signer {
            context,
            secret: self.secret,
            id: self.id,
        }
    }

    /// A key of its own for `context` (a market's id), derived from this one: a member's
    /// pseudonym in that market (`specs/market.md`, "Pseudonyms"). Nobody without the secret
    /// can link it to this key; the same secret and context always give the same key.
    pub fn derive(&self, context: &[u8; 32], blinding_seed: &[u8; 32]) -> Signer {
        use sha2::{Digest, Sha256};
        let mut counter = 0u8;
        loop {
            let mut h = Sha256::new();
            h.update(b"gridchan.pseudonym.v1");
            h.update(self.secret.secret_bytes());
            h.update(context);
            h.update([counter]);
            let secret: [u8; 32] = h.finalize().into();
            // A hash outside the group order (probability about 2^-128) tries the next one.
            if let Ok(signer) = Signer::new(&secret, blinding_seed) {
                return signer;
            }
            counter += 1;
        }
    }

    /// Signs a 32-byte digest. libsecp256k1 always produces low-`s` signatures; a recovery id
    /// of 2 or 3 (an `r` above the group order, probability about 2^-127) cannot be expressed as
    /// `v` in {27, 28} and is retried with extra nonce data.
    pub fn sign(&self, digest: &[u8; 32]) -> Signature {
        self.sign_now(digest)
    }

    /// Signatures over `digests`, for [`Precomputed`]. They are the very signatures
    /// [`Signer::sign`] would make (RFC 6979 nonces make signing deterministic); they stay in
    /// memory and are used only if the state machine decides to sign the same digest in the input
    /// they are handed in with. A host with a thread pool makes them one by one there instead
    /// ([`Signer::presign_one`]).
    pub fn presign(&self, digests: &[[u8; 32]]) -> Presigned {
        Presigned::collect(self, digests.iter().map(|d| self.presign_one(d)))
    }

    /// One signature made ahead (see [`Signer::presign`]), to gather with
    /// [`Presigned::collect`].
    pub fn presign_one(&self, digest: &[u8; 32]) -> PresignedOne {
        PresignedOne {
            signer: self.id,
            digest: *digest,
            sig: self.sign_now(digest),
        }
    }

    fn sign_now(&self, digest: &[u8; 32]) -> Signature {
        let msg = Message::from_digest(*digest);
        let mut sig = self.context.sign_ecdsa_recoverable(msg, &self.secret);
        let mut extra = [0u8; 32];
        loop {
            let (recid, rs) = sig.serialize_compact();
            let recid = i32::from(recid);
            if recid < 2 {
                let mut out = [0u8; 65];
                out[..64].copy_from_slice(&rs);
                out[64] = 27 + recid as u8;
                return Signature(out);
            }
            extra[0] = extra[0].wrapping_add(1);
            sig = self
                .context
                .sign_ecdsa_recoverable_with_noncedata(msg, &self.secret, &extra);
        }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Signer({:?})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> Signer {
        Signer::new(&[byte; 32], &[0u8; 32]).unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let s = signer(1);
        let sig = s.sign(&[7; 32]);
        assert!(sig.v() == 27 || sig.v() == 28);
        assert_eq!(sig.verify(&[7; 32], &s.id()), Ok(()));
    }

    #[test]
    fn wrong_signer_wrong_digest_and_bad_v_are_refused() {
        let s = signer(1);
        let sig = s.sign(&[7; 32]);
        assert_eq!(
            sig.verify(&[7; 32], &signer(2).id()),
            Err(CryptoError::WrongSigner)
        );
        assert_eq!(sig.verify(&[8; 32], &s.id()), Err(CryptoError::WrongSigner));
        let mut bad_v = sig;
        bad_v.0[64] = 1;
        assert_eq!(
            bad_v.verify(&[7; 32], &s.id()),
            Err(CryptoError::InvalidRecoveryByte)
        );
    }

    #[test]
    fn high_s_twin_is_refused() {
        let s = signer(3);
        let sig = s.sign(&[9; 32]);
        // The twin: s' = n - s, v flipped. Valid ECDSA, but malleable, so refused.
        let n: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c,
            0xd0, 0x36, 0x41, 0x41,
        ];
        let mut twin = sig;
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(n[i]) - i16::from(sig.0[32 + i]) - borrow;
            twin.0[32 + i] = d.rem_euclid(256) as u8;
            borrow = i16::from(d < 0);
        }
        twin.0[64] = if sig.v() == 27 { 28 } else { 27 };
        assert_eq!(twin.verify(&[9; 32], &s.id()), Err(CryptoError::HighS));
    }

    #[test]
    fn garbage_signature_is_malformed_not_a_panic() {
        let mut sig = Signature([0u8; 65]);
        sig.0[64] = 27;
        assert_eq!(
            sig.verify(&[1; 32], &signer(1).id()),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn address_matches_ethereum_for_secret_key_one() {
        let mut one = [0u8; 32];
        one[31] = 1;
        let id = Signer::new(&one, &[0; 32]).unwrap().id();
        assert_eq!(
            id.address().to_string(),
            "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
    }

    #[test]
    fn node_ids_round_trip_through_their_uncompressed_form() {
        let id = signer(5).id();
        assert_eq!(NodeId::from_xy(&id.to_xy()), Ok(id));
        assert_eq!(
            NodeId::from_xy(&[0; 64]),
            Err(CryptoError::InvalidPublicKey)
        );
    }

    #[test]
    fn node_ids_round_trip_through_hex() {
        let id = signer(5).id();
        assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        assert!("00".parse::<NodeId>().is_err());
    }

    #[test]
    fn work_done_ahead_gives_the_same_answers_and_only_to_its_signer() {
        let a = Signer::new(&[1; 32], &[2; 32]).unwrap();
        let b = Signer::new(&[3; 32], &[4; 32]).unwrap();
        let digests: Vec<[u8; 32]> = (0..20u8).map(|i| [i; 32]).collect();
        let presigned = a.presign(&digests);
        let direct: Vec<Signature> = digests.iter().map(|d| a.sign(d)).collect();
        let ahead = Precomputed::new(Recovered::NONE, presigned);
        let keys = |signer| Keys {
            signer,
            ahead: &ahead,
        };
        let by_ahead: Vec<Signature> = digests.iter().map(|d| keys(&a).sign(d)).collect();
        assert_eq!(direct, by_ahead, "RFC 6979: the same signatures");
        // Another signer never picks up a's signatures.
        let by_b = keys(&b).sign(&digests[0]);
        assert!(by_b.verify(&digests[0], &b.id()).is_ok());
        // Recovered: the same result as recovering now, including for a wrong signature.
        let mut bad = direct[1];
        bad.0[64] = 29;
        let items: Vec<([u8; 32], Signature)> = vec![(digests[0], direct[0]), (digests[1], bad)];
        let recovered = Recovered::collect(items.iter().map(|(d, s)| Recovered::one(d, s)));
        assert_eq!(recovered.len(), 2);
        assert_eq!(
            direct[0].verify_known(&digests[0], &a.id(), &recovered),
            Ok(())
        );
        assert_eq!(
            bad.verify_known(&digests[1], &a.id(), &recovered),
            bad.verify(&digests[1], &a.id())
        );
    }
}

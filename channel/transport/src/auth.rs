//! Proving node keys over a fresh connection.

use gridchan_channel::{NodeId, Signature, Signer};
use sha2::{Digest, Sha256};

/// The TLS exporter label (RFC 8446 section 7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-gridchan-node-auth-v1";

/// Length of a hello: a compressed public key and a signature.
pub const HELLO_LEN: usize = 33 + 65;

/// Who speaks: the digest differs per role, so a client's proof cannot be reflected back as
/// the server's.
#[derive(Clone, Copy)]
pub enum Role {
    Client,
    Server,
}

fn digest(role: Role, keying_material: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"gridchan.auth.v1");
    h.update(match role {
        Role::Client => b"client",
        Role::Server => b"server",
    });
    h.update(keying_material);
    h.finalize().into()
}

/// Our hello: our node key and its signature over this connection's keying material.
pub fn hello(signer: &Signer, role: Role, keying_material: &[u8; 32]) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..33].copy_from_slice(&signer.id().to_bytes());
    out[33..].copy_from_slice(&signer.sign(&digest(role, keying_material)).0);
    out
}

/// Checks the peer's hello; returns the node key it proved.
pub fn check_hello(
    bytes: &[u8; HELLO_LEN],
    role: Role,
    keying_material: &[u8; 32],
) -> Option<NodeId> {
    let key: [u8; 33] = bytes[..33].try_into().ok()?;
    let node = NodeId::from_bytes(&key).ok()?;
    let sig = Signature(bytes[33..].try_into().ok()?);
    sig.verify(&digest(role, keying_material), &node).ok()?;
    Some(node)
}

//! The language-neutral encoding: a sequence of 32-byte big-endian words, the layout Solidity's
//! `abi.encode` gives for static types, so an EVM contract can recompute every digest with
//! `sha256(abi.encode(...))`.

use sha2::{Digest, Sha256};

/// Builds an encoding word by word.
#[derive(Default)]
pub struct Words {
    bytes: Vec<u8>,
}

impl Words {
    pub fn with_capacity(words: usize) -> Words {
        Words {
            bytes: Vec::with_capacity(words * 32),
        }
    }

    /// A `bytes32`.
    pub fn bytes32(&mut self, word: &[u8; 32]) -> &mut Self {
        self.bytes.extend_from_slice(word);
        self
    }

    /// A `uint256` holding an unsigned 64-bit value.
    pub fn uint(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&[0u8; 24]);
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// An `int256` (two's complement, sign-extended).
    pub fn int(&mut self, value: i64) -> &mut Self {
        let fill = if value < 0 { 0xff } else { 0x00 };
        self.bytes.extend_from_slice(&[fill; 24]);
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A `bool`: 1 or 0.
    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.uint(u64::from(value))
    }

    /// An `address`: 20 bytes, left-padded with zeros.
    pub fn address(&mut self, address: &[u8; 20]) -> &mut Self {
        self.bytes.extend_from_slice(&[0u8; 12]);
        self.bytes.extend_from_slice(address);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }
}

/// A domain tag: ASCII text right-padded with zeros to one word, like a Solidity `bytes32`
/// string literal.
pub const fn domain_tag(text: &str) -> [u8; 32] {
    let src = text.as_bytes();
    assert!(src.len() <= 32, "a domain tag fits in one word");
    let mut word = [0u8; 32];
    let mut i = 0;
    while i < src.len() {
        word[i] = src[i];
        i += 1;
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_big_endian_and_sign_extended() {
        let mut w = Words::default();
        w.uint(1).int(-1).boolean(true);
        let b = w.as_bytes();
        assert_eq!(b.len(), 96);
        assert_eq!(b[31], 1);
        assert!(b[32..64].iter().all(|&x| x == 0xff));
        assert_eq!(b[95], 1);
    }

    #[test]
    fn domain_tags_are_right_padded() {
        let tag = domain_tag("ab");
        assert_eq!(&tag[..2], b"ab");
        assert!(tag[2..].iter().all(|&x| x == 0));
    }
}

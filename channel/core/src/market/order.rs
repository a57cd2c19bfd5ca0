//! Orders, receipts and enrolment: what a member signs with its pseudonym and what the market
//! node signs back (`specs/market.md`, "Orders").

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::abi::{domain_tag, Words};
use crate::crypto::{CryptoError, NodeId, Recovered, Signature, Signer};
use crate::types::{ChannelId, IntervalIndex, PricePerKwh, WattHours};

use super::clearing;

const ORDER_DOMAIN: [u8; 32] = domain_tag("gridchan.order.v1");
const RECEIPT_DOMAIN: [u8; 32] = domain_tag("gridchan.receipt.v1");
const ENROL_DOMAIN: [u8; 32] = domain_tag("gridchan.enrol.v1");

/// A member's pseudonym as it appears in books: the SHA-256 of its pseudonym key (33 bytes,
/// compressed). It names no node key and no address.
pub fn pseudonym_id(key: &NodeId) -> [u8; 32] {
    Sha256::digest(key.to_bytes()).into()
}

/// One member's order for one interval: what its meter measured and its limit prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    pub market: [u8; 32],
    pub interval: IntervalIndex,
    /// The member's pseudonym ([`pseudonym_id`]).
    pub member: [u8; 32],
    pub import: WattHours,
    pub export: WattHours,
    pub sell_at_least: PricePerKwh,
    pub buy_at_most: PricePerKwh,
}

impl Order {
    /// `sha256(abi.encode("gridchan.order.v1", market, interval, member, import, export,
    /// sell_at_least, buy_at_most))`: what the member's pseudonym signs.
    pub fn digest(&self) -> [u8; 32] {
        let mut w = Words::with_capacity(8);
        w.bytes32(&ORDER_DOMAIN)
            .bytes32(&self.market)
            .uint(self.interval.0)
            .bytes32(&self.member)
            .uint(self.import.0)
            .uint(self.export.0)
            .uint(self.sell_at_least.0)
            .uint(self.buy_at_most.0);
        w.sha256()
    }

    /// The order as the clearing rule reads it.
    pub fn clearing(&self) -> clearing::Order {
        clearing::Order {
            member: self.member,
            import: self.import,
            export: self.export,
            sell_at_least: self.sell_at_least,
            buy_at_most: self.buy_at_most,
        }
    }
}

/// A member's order as it travels to the market node (message 9): the signed order, and its
/// meter's signed reading of the interval when its meter signs (`specs/market.md`,
/// "Evidence"). The reading stays with the market node: books carry the order alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMessage {
    pub order: SignedOrder,
    pub reading: Option<crate::reading::SignedReading>,
}

impl OrderMessage {
    /// An order with no reading: its member's word.
    pub fn unsigned(order: SignedOrder) -> OrderMessage {
        OrderMessage {
            order,
            reading: None,
        }
    }
}

/// An order with its pseudonym's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedOrder {
    pub order: Order,
    pub sig: Signature,
}

impl SignedOrder {
    /// Signs `order` with the member's pseudonym key; its `member` is set to that key's
    /// pseudonym.
    pub fn sign(mut order: Order, pseudonym: &Signer) -> SignedOrder {
        order.member = pseudonym_id(&pseudonym.id());
        let sig = pseudonym.sign(&order.digest());
        SignedOrder { order, sig }
    }

    /// The pseudonym key that signed the order, checked to be the one the order names.
    pub fn signer(&self, known: &Recovered) -> Result<NodeId, CryptoError> {
        self.signer_with(&self.order.digest(), known)
    }

    /// [`SignedOrder::signer`], with the order's digest computed once by the caller.
    pub fn signer_with(&self, digest: &[u8; 32], known: &Recovered) -> Result<NodeId, CryptoError> {
        let key = self.sig.recover_known(digest, known)?;
        if pseudonym_id(&key) == self.order.member {
            Ok(key)
        } else {
            Err(CryptoError::WrongSigner)
        }
    }
}

/// The market node's acknowledgement that it took an order: its signature over the order's
/// digest. With a book that leaves the order out (or changes it), it proves the market node
/// broke its word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The digest of the order taken.
    pub order: [u8; 32],
    pub sig: Signature,
}

impl Receipt {
    fn digest(order: &[u8; 32]) -> [u8; 32] {
        let mut w = Words::with_capacity(2);
        w.bytes32(&RECEIPT_DOMAIN).bytes32(order);
        w.sha256()
    }

    /// The market node's receipt for `order`.
    pub fn sign(order: &Order, market_node: &Signer) -> Receipt {
        let digest = order.digest();
        Receipt {
            order: digest,
            sig: market_node.sign(&Receipt::digest(&digest)),
        }
    }

    /// Checks that `market_node` signed this receipt for `order`.
    pub fn verify(&self, order: &Order, market_node: &NodeId) -> Result<(), CryptoError> {
        if self.order != order.digest() {
            return Err(CryptoError::WrongSigner);
        }
        self.sig.verify(&Receipt::digest(&self.order), market_node)
    }
}

/// A member tells the market node, over its channel's connection, the pseudonym it will sign
/// its orders with, and proves it holds the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrol {
    pub channel_id: ChannelId,
    pub pseudonym: NodeId,
    /// The pseudonym's signature over `(market, channel_id)`.
    pub sig: Signature,
}

impl Enrol {
    fn digest(market: &[u8; 32], channel: &ChannelId) -> [u8; 32] {
        let mut w = Words::with_capacity(3);
        w.bytes32(&ENROL_DOMAIN).bytes32(market).bytes32(&channel.0);
        w.sha256()
    }

    pub fn sign(market: &[u8; 32], channel_id: ChannelId, pseudonym: &Signer) -> Enrol {
        Enrol {
            channel_id,
            pseudonym: pseudonym.id(),
            sig: pseudonym.sign(&Enrol::digest(market, &channel_id)),
        }
    }

    /// Checks the proof of possession for `market`.
    pub fn verify(&self, market: &[u8; 32]) -> Result<(), CryptoError> {
        self.sig
            .verify(&Enrol::digest(market, &self.channel_id), &self.pseudonym)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(b: u8) -> Signer {
        Signer::new(&[b; 32], &[0; 32]).unwrap()
    }

    fn order() -> Order {
        Order {
            market: [7; 32],
            interval: IntervalIndex(100),
            member: [0; 32],
            import: WattHours(0),
            export: WattHours(250),
            sell_at_least: PricePerKwh(90_000),
            buy_at_most: PricePerKwh(0),
        }
    }

    #[test]
    fn an_order_is_signed_by_the_pseudonym_it_names() {
        let node = signer(1);
        let pseudonym = node.derive(&[7; 32], &[0; 32]);
        assert_ne!(
            pseudonym.id(),
            node.id(),
            "the pseudonym is not the node key"
        );
        assert_eq!(
            node.derive(&[7; 32], &[1; 32]).id(),
            pseudonym.id(),
            "derived the same way every time"
        );
        assert_ne!(node.derive(&[8; 32], &[0; 32]).id(), pseudonym.id());
        let signed = SignedOrder::sign(order(), &pseudonym);
        assert_eq!(signed.signer(&Recovered::NONE), Ok(pseudonym.id()));
        // Another pseudonym's order with this signature, or an altered order, does not verify.
        let mut forged = signed;
        forged.order.member = pseudonym_id(&signer(2).id());
        assert!(forged.signer(&Recovered::NONE).is_err());
        let mut altered = signed;
        altered.order.export = WattHours(251);
        assert!(altered.signer(&Recovered::NONE).is_err());
    }

    #[test]
    fn a_receipt_and_an_enrolment_verify_only_for_what_was_signed() {
        let market = signer(3);
        let o = order();
        let r = Receipt::sign(&o, &market);
        assert!(r.verify(&o, &market.id()).is_ok());
        assert!(r.verify(&o, &signer(4).id()).is_err());
        let mut other = o;
        other.import = WattHours(1);
        assert!(r.verify(&other, &market.id()).is_err());
        let e = Enrol::sign(&[7; 32], ChannelId([1; 32]), &signer(5));
        assert!(e.verify(&[7; 32]).is_ok());
        assert!(e.verify(&[8; 32]).is_err(), "for another market");
    }
}

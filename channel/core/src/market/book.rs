//! The market node's signed publications, the roster of member pseudonyms and each interval's
//! book, the checks a member makes before it signs anything that depends on them, and the parts
//! a publication travels in (it may exceed a frame).

use std::collections::{BTreeMap, HashSet};

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::abi::{domain_tag, Words};
use crate::crypto::{NodeId, Recovered, Signature, Signer};
use crate::types::{Amount, IntervalIndex, PricePerKwh, WattHours};

use super::clearing::{clear, BookError, Clearing, Fill, Grid};
use super::order::SignedOrder;
use super::{MarketTerms, Rule};

const ROSTER_DOMAIN: [u8; 32] = domain_tag("gridchan.roster.v1");
const BOOK_DOMAIN: [u8; 32] = domain_tag("gridchan.book.v1");

/// The most members a roster lists.
pub const MAX_MEMBERS: usize = 20_000;

/// The set of member pseudonyms, each backed by a funded channel with the market node, signed
/// by the market node. A member checks every order of a book against it, without learning who
/// any other member is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    pub market: [u8; 32],
    /// Grows by one with every change.
    pub epoch: u64,
    /// Pseudonyms in ascending byte order, each once.
    pub members: Vec<[u8; 32]>,
    pub sig: Signature,
}

impl Roster {
    /// The roster of `members` (sorted here), signed by the market node.
    pub fn sign(market: [u8; 32], epoch: u64, mut members: Vec<[u8; 32]>, node: &Signer) -> Roster {
        members.sort();
        members.dedup();
        let mut r = Roster {
            market,
            epoch,
            members,
            sig: Signature([0; 65]),
        };
        r.sig = node.sign(&r.digest());
        r
    }

    /// `sha256(abi.encode("gridchan.roster.v1", market, epoch, count) || members)`.
    pub fn digest(&self) -> [u8; 32] {
        let mut w = Words::with_capacity(4);
        w.bytes32(&ROSTER_DOMAIN)
            .bytes32(&self.market)
            .uint(self.epoch)
            .uint(self.members.len() as u64);
        let mut h = Sha256::new();
        h.update(w.as_bytes());
        for m in &self.members {
            h.update(m);
        }
        h.finalize().into()
    }

    /// Checks the market node's signature, the market, and that the pseudonyms are sorted and
    /// distinct.
    pub fn verify(&self, market: &[u8; 32], node: &NodeId) -> Result<(), BookRefusal> {
        if self.market != *market {
            return Err(BookRefusal::WrongMarket);
        }
        if self.members.len() > MAX_MEMBERS || !self.members.windows(2).all(|w| w[0] < w[1]) {
            return Err(BookRefusal::RosterMalformed);
        }
        self.sig
            .verify(&self.digest(), node)
            .map_err(|_| BookRefusal::NotSignedByTheMarket)
    }

    pub fn contains(&self, member: &[u8; 32]) -> bool {
        self.members.binary_search(member).is_ok()
    }
}

/// One interval's book: every order the market node took, the clearing's result, signed by the
/// market node. Members sign their channel updates only after checking it
/// ([`Book::check`]), and their updates commit to its [`Book::digest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    pub market: [u8; 32],
    pub interval: IntervalIndex,
    /// The digest of the roster the orders belong to.
    pub roster: [u8; 32],
    pub feed_in: PricePerKwh,
    pub retail: PricePerKwh,
    pub fee: PricePerKwh,
    pub rule: Rule,
    /// In ascending pseudonym order.
    pub orders: Vec<SignedOrder>,
    pub price: Option<PricePerKwh>,
    pub traded: WattHours,
    /// What the market node keeps.
    pub income: Amount,
    /// The digest of the fills ([`fills_digest`]); every member recomputes them.
    pub fills: [u8; 32],
    pub sig: Signature,
}

/// `sha256` of every fill's five words `(member, sold, bought, earned, paid)`, in order.
pub fn fills_digest(fills: &[Fill]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in fills {
        let mut w = Words::with_capacity(5);
        w.bytes32(&f.member)
            .uint(f.sold.0)
            .uint(f.bought.0)
            .uint(f.earned.0)
            .uint(f.paid.0);
        h.update(w.as_bytes());
    }
    h.finalize().into()
}

/// Why a member refuses a book (or a roster). The market node signed it: with the book (and
/// the member's receipt, for the two about its own order) anyone can check the refusal again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookRefusal {
    #[error("not signed by the market node")]
    NotSignedByTheMarket,
    #[error("for another market")]
    WrongMarket,
    #[error("for interval {got}, expected {expected}")]
    WrongInterval { expected: u64, got: u64 },
    #[error("names a roster this member does not hold")]
    UnknownRoster,
    #[error("the roster is not sorted, repeats a pseudonym or is too long")]
    RosterMalformed,
    #[error("its grid prices, fee or rule are not the market's terms for the interval")]
    TermsChanged,
    #[error("its orders are not in ascending pseudonym order, or one appears twice")]
    OrdersNotSorted,
    #[error("the order of {} is for another market or interval", short(.0))]
    ForeignOrder([u8; 32]),
    #[error("the order of {} is not signed by that pseudonym", short(.0))]
    ForgedOrder([u8; 32]),
    #[error("{} is not on the roster", short(.0))]
    NotAMember([u8; 32]),
    #[error("our order, receipted by the market node, is missing")]
    OwnOrderMissing,
    #[error("our order, receipted by the market node, was altered")]
    OwnOrderAltered,
    #[error("the book cannot be cleared: {0}")]
    Unclearable(BookError),
    #[error("the published clearing is not the rule's: its {0} differs")]
    WrongClearing(&'static str),
}

fn short(m: &[u8; 32]) -> String {
    hex::encode(&m[..4])
}

/// What a member checks a book against.
pub struct Expect<'a> {
    pub market_node: &'a NodeId,
    pub terms: &'a MarketTerms,
    pub interval_seconds: u32,
    pub interval: IntervalIndex,
    pub roster: &'a Roster,
    /// Its digest (a member keeps it with the roster).
    pub roster_digest: &'a [u8; 32],
    /// Our own order, when the market node receipted it.
    pub own: Option<&'a SignedOrder>,
    /// Order signatures recovered ahead by the host.
    pub known: &'a Recovered,
}

impl Book {
    /// Clears `orders` (taken for `interval` from members of `roster`) under `terms` and signs
    /// the book. The orders are sorted here.
    pub fn close(
        terms: &MarketTerms,
        interval_seconds: u32,
        interval: IntervalIndex,
        roster: &Roster,
        mut orders: Vec<SignedOrder>,
        node: &Signer,
    ) -> Result<(Book, Clearing), BookError> {
        let grid = terms
            .grid_at(interval, interval_seconds)
            .ok_or(BookError::Overflow)?;
        orders.sort_by_key(|o| o.order.member);
        let book_orders: Vec<_> = orders.iter().map(|o| o.order.clearing()).collect();
        let clearing = clear(&book_orders, grid, terms.fee, terms.rule)?;
        let mut book = Book {
            market: terms.market,
            interval,
            roster: roster.digest(),
            feed_in: grid.feed_in,
            retail: grid.retail,
            fee: terms.fee,
            rule: terms.rule,
            orders,
            price: clearing.price,
            traded: clearing.traded,
            income: clearing.market_income,
            fills: fills_digest(&clearing.fills),
            sig: Signature([0; 65]),
        };
        book.sig = node.sign(&book.digest());
        Ok((book, clearing))
    }

    /// The digest every member's channel update for the interval commits to:
    /// `sha256(abi.encode("gridchan.book.v1", market, interval, roster, feed_in, retail, fee,
    /// rule, count, orders, has_price, price, traded, income, fills))`, where `orders` is the
    /// SHA-256 of every order's digest followed by its 65-byte signature, in order.
    pub fn digest(&self) -> [u8; 32] {
        self.digest_with(&self.order_digests())
    }

    /// Every order's digest, in the book's order: what [`Book::digest_with`] and
    /// [`Book::check_with`] take, computed once.
    pub fn order_digests(&self) -> Vec<[u8; 32]> {
        self.orders.iter().map(|o| o.order.digest()).collect()
    }

    /// [`Book::digest`] from the orders' digests ([`Book::order_digests`]).
    pub fn digest_with(&self, order_digests: &[[u8; 32]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for (o, d) in self.orders.iter().zip(order_digests) {
            h.update(d);
            h.update(o.sig.0);
        }
        let orders: [u8; 32] = h.finalize().into();
        let mut w = Words::with_capacity(15);
        w.bytes32(&BOOK_DOMAIN)
            .bytes32(&self.market)
            .uint(self.interval.0)
            .bytes32(&self.roster)
            .uint(self.feed_in.0)
            .uint(self.retail.0)
            .uint(self.fee.0)
            .uint(self.rule as u64)
            .uint(self.orders.len() as u64)
            .bytes32(&orders)
            .boolean(self.price.is_some())
            .uint(self.price.map_or(0, |p| p.0))
            .uint(self.traded.0)
            .uint(self.income.0)
            .bytes32(&self.fills);
        w.sha256()
    }

    /// Everything a member checks before it signs an update that commits to this book: the
    /// market node signed it, for this market and interval, under the market's terms, over the
    /// roster the member holds; every order is for this interval, signed by the pseudonym it
    /// names, which is on the roster, each once; our own receipted order is in it unaltered;
    /// and the clearing recomputed is the one published. Returns the clearing.
    pub fn check(&self, e: &Expect) -> Result<Clearing, BookRefusal> {
        let order_digests = self.order_digests();
        self.check_with(&self.digest_with(&order_digests), &order_digests, e)
    }

    /// [`Book::check`], with the book's [`Book::digest`] and its [`Book::order_digests`]
    /// computed once by the caller (which names the settlements with the one and recovers the
    /// signatures ahead with the other).
    pub fn check_with(
        &self,
        digest: &[u8; 32],
        order_digests: &[[u8; 32]],
        e: &Expect,
    ) -> Result<Clearing, BookRefusal> {
        assert_eq!(
            order_digests.len(),
            self.orders.len(),
            "one digest per order"
        );
        self.sig
            .verify(digest, e.market_node)
            .map_err(|_| BookRefusal::NotSignedByTheMarket)?;
        if self.market != e.terms.market {
            return Err(BookRefusal::WrongMarket);
        }
        if self.interval != e.interval {
            return Err(BookRefusal::WrongInterval {
                expected: e.interval.0,
                got: self.interval.0,
            });
        }
        if self.roster != *e.roster_digest {
            return Err(BookRefusal::UnknownRoster);
        }
        let grid = e.terms.grid_at(self.interval, e.interval_seconds);
        let terms = Some(Grid {
            feed_in: self.feed_in,
            retail: self.retail,
        }) == grid
            && self.fee == e.terms.fee
            && self.rule == e.terms.rule;
        if !terms {
            return Err(BookRefusal::TermsChanged);
        }
        if !self
            .orders
            .windows(2)
            .all(|w| w[0].order.member < w[1].order.member)
        {
            return Err(BookRefusal::OrdersNotSorted);
        }
        for (o, d) in self.orders.iter().zip(order_digests) {
            let member = o.order.member;
            if o.order.market != self.market || o.order.interval != self.interval {
                return Err(BookRefusal::ForeignOrder(member));
            }
            if !e.roster.contains(&member) {
                return Err(BookRefusal::NotAMember(member));
            }
            o.signer_with(d, e.known)
                .map_err(|_| BookRefusal::ForgedOrder(member))?;
        }
        if let Some(own) = e.own {
            let member = own.order.member;
            match self
                .orders
                .binary_search_by_key(&member, |o| o.order.member)
            {
                Err(_) => return Err(BookRefusal::OwnOrderMissing),
                Ok(i) if self.orders[i] != *own => return Err(BookRefusal::OwnOrderAltered),
                Ok(_) => {}
            }
        }
        let orders: Vec<_> = self.orders.iter().map(|o| o.order.clearing()).collect();
        let grid = grid.expect("checked above");
        let clearing =
            clear(&orders, grid, self.fee, self.rule).map_err(BookRefusal::Unclearable)?;
        if clearing.price != self.price {
            return Err(BookRefusal::WrongClearing("price"));
        }
        if clearing.traded != self.traded {
            return Err(BookRefusal::WrongClearing("energy traded"));
        }
        if clearing.market_income != self.income {
            return Err(BookRefusal::WrongClearing("market income"));
        }
        if fills_digest(&clearing.fills) != self.fills {
            return Err(BookRefusal::WrongClearing("fills"));
        }
        Ok(clearing)
    }
}

/// What a publication is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// A [`Roster`]; the key is its epoch.
    Roster = 0,
    /// A [`Book`]; the key is its interval.
    Book = 1,
}

/// One part of a publication too large for a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub topic: Topic,
    pub key: u64,
    pub index: u16,
    pub count: u16,
    pub bytes: Vec<u8>,
}

/// Bytes of a publication per part: a part's frame stays well inside the frame limit.
pub const PART_BYTES: usize = 12 * 1024;
/// The largest publication: 4 MiB (a book of 20,000 orders fits).
pub const MAX_PUBLICATION: usize = 4 * 1024 * 1024;
/// Publications being assembled at once; a newer one pushes out the oldest.
const MAX_ASSEMBLING: usize = 4;

type PublicationConfig = Configuration<LittleEndian, Varint, Limit<MAX_PUBLICATION>>;

fn publication_config() -> PublicationConfig {
    bincode::config::standard().with_limit::<MAX_PUBLICATION>()
}

/// Why parts do not make a publication. Each is the sender's violation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("a part numbered {index} of {count}")]
    Numbering { index: u16, count: u16 },
    #[error("a publication of more than {MAX_PUBLICATION} bytes")]
    TooLarge,
    #[error("part {index} of {count} differs from the part sent before")]
    Conflicting { index: u16, count: u16 },
    #[error("the publication does not decode: {0}")]
    Malformed(String),
}

/// A publication's parts as they arrive, assembled when the last one is in.
#[derive(Default)]
pub struct Parts {
    assembling: BTreeMap<(Topic, u64), Vec<Option<Vec<u8>>>>,
}

impl Parts {
    /// The parts of `value`, published under `(topic, key)`.
    pub fn split<T: Serialize>(topic: Topic, key: u64, value: &T) -> Vec<Part> {
        let bytes = bincode::serde::encode_to_vec(value, publication_config())
            .expect("our own publications fit");
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[]]
        } else {
            bytes.chunks(PART_BYTES).collect()
        };
        let count = chunks.len() as u16;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| Part {
                topic,
                key,
                index: i as u16,
                count,
                bytes: c.to_vec(),
            })
            .collect()
    }

    /// Takes one part; returns the publication's bytes once all of its parts are in.
    pub fn on_part(&mut self, part: Part) -> Result<Option<(Topic, u64, Vec<u8>)>, PartError> {
        let max_parts = MAX_PUBLICATION.div_ceil(PART_BYTES);
        if part.count == 0 || part.index >= part.count {
            return Err(PartError::Numbering {
                index: part.index,
                count: part.count,
            });
        }
        if usize::from(part.count) > max_parts || part.bytes.len() > PART_BYTES {
            return Err(PartError::TooLarge);
        }
        let id = (part.topic, part.key);
        if !self.assembling.contains_key(&id) && self.assembling.len() >= MAX_ASSEMBLING {
            let oldest = *self.assembling.keys().next().expect("not empty");
            self.assembling.remove(&oldest);
        }
        let slots = self
            .assembling
            .entry(id)
            .or_insert_with(|| vec![None; usize::from(part.count)]);
        if slots.len() != usize::from(part.count) {
            self.assembling.remove(&id);
            return Err(PartError::Numbering {
                index: part.index,
                count: part.count,
            });
        }
        let slot = &mut slots[usize::from(part.index)];
        match slot {
            Some(held) if *held != part.bytes => {
                let (index, count) = (part.index, part.count);
                self.assembling.remove(&id);
                return Err(PartError::Conflicting { index, count });
            }
            _ => *slot = Some(part.bytes),
        }
        if slots.iter().any(Option::is_none) {
            return Ok(None);
        }
        let slots = self.assembling.remove(&id).expect("present");
        let bytes: Vec<u8> = slots.into_iter().flatten().flatten().collect();
        Ok(Some((id.0, id.1, bytes)))
    }

    /// Decodes an assembled publication.
    pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PartError> {
        let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, publication_config())
            .map_err(|e| PartError::Malformed(e.to_string()))?;
        if used != bytes.len() {
            return Err(PartError::Malformed(format!(
                "{} trailing bytes",
                bytes.len() - used
            )));
        }
        Ok(value)
    }
}

/// Distinct pseudonyms of `orders`, for a host that recovers their signatures ahead.
pub fn order_signatures(book: &Book) -> Vec<([u8; 32], Signature)> {
    let mut seen = HashSet::new();
    book.orders
        .iter()
        .filter(|o| seen.insert(o.order.member))
        .map(|o| (o.order.digest(), o.sig))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::order::{pseudonym_id, Order};
    use crate::tariff::TimeOfUse;

    fn signer(b: u8) -> Signer {
        Signer::new(&[b; 32], &[0; 32]).unwrap()
    }

    fn terms() -> MarketTerms {
        MarketTerms {
            market: [7; 32],
            rule: Rule::PayAsClear,
            fee: PricePerKwh(0),
            deadline_permille: 100,
            feed_in: TimeOfUse::flat(PricePerKwh(80_000)),
            retail: TimeOfUse::flat(PricePerKwh(300_000)),
        }
    }

    const AT: IntervalIndex = IntervalIndex(40);

    fn order(by: &Signer, import: u64, export: u64) -> SignedOrder {
        SignedOrder::sign(
            Order {
                market: [7; 32],
                interval: AT,
                member: [0; 32],
                import: WattHours(import),
                export: WattHours(export),
                sell_at_least: PricePerKwh(90_000),
                buy_at_most: PricePerKwh(250_000),
            },
            by,
        )
    }

    struct Fixture {
        market: Signer,
        roster: Roster,
        orders: Vec<SignedOrder>,
        book: Book,
    }

    fn fixture() -> Fixture {
        let market = signer(1);
        let members: Vec<Signer> = (2..6).map(signer).collect();
        let roster = Roster::sign(
            [7; 32],
            1,
            members.iter().map(|m| pseudonym_id(&m.id())).collect(),
            &market,
        );
        let orders = vec![
            order(&members[0], 0, 600),
            order(&members[1], 400, 0),
            order(&members[2], 300, 0),
        ];
        let (book, _) = Book::close(&terms(), 900, AT, &roster, orders.clone(), &market).unwrap();
        Fixture {
            market,
            roster,
            orders,
            book,
        }
    }

    fn check(f: &Fixture, book: &Book, own: Option<&SignedOrder>) -> Result<Clearing, BookRefusal> {
        book.check(&Expect {
            market_node: &f.market.id(),
            terms: &terms(),
            interval_seconds: 900,
            interval: AT,
            roster: &f.roster,
            roster_digest: &f.roster.digest(),
            own,
            known: &Recovered::NONE,
        })
    }

    /// The book changed by `edit`, signed again by the market node (so only the check named
    /// fails, not the signature).
    fn edited(f: &Fixture, edit: impl FnOnce(&mut Book)) -> Book {
        let mut b = f.book.clone();
        edit(&mut b);
        b.sig = f.market.sign(&b.digest());
        b
    }

    #[test]
    fn an_honest_book_passes_every_check() {
        let f = fixture();
        let c = check(&f, &f.book, Some(&f.orders[1])).unwrap();
        assert_eq!(c.traded, WattHours(600));
        f.roster.verify(&[7; 32], &f.market.id()).unwrap();
    }

    #[test]
    fn a_book_that_fails_any_check_is_refused_with_its_reason() {
        let f = fixture();
        let stranger = signer(9);
        let mut unsigned = f.book.clone();
        unsigned.sig = stranger.sign(&unsigned.digest());
        let cases: Vec<(Book, Option<&SignedOrder>, BookRefusal)> = vec![
            (unsigned, None, BookRefusal::NotSignedByTheMarket),
            (
                edited(&f, |b| b.market = [8; 32]),
                None,
                BookRefusal::WrongMarket,
            ),
            (
                edited(&f, |b| b.interval = IntervalIndex(41)),
                None,
                BookRefusal::WrongInterval {
                    expected: 40,
                    got: 41,
                },
            ),
            (
                edited(&f, |b| b.roster = [0; 32]),
                None,
                BookRefusal::UnknownRoster,
            ),
            (
                edited(&f, |b| b.fee = PricePerKwh(1)),
                None,
                BookRefusal::TermsChanged,
            ),
            (
                edited(&f, |b| b.retail = PricePerKwh(1_000_000)),
                None,
                BookRefusal::TermsChanged,
            ),
            (
                edited(&f, |b| b.orders.reverse()),
                None,
                BookRefusal::OrdersNotSorted,
            ),
            (
                edited(&f, |b| {
                    let dup = b.orders[0];
                    b.orders.insert(0, dup)
                }),
                None,
                BookRefusal::OrdersNotSorted,
            ),
            (
                edited(&f, |b| b.orders.retain(|o| o != &f.orders[1])),
                Some(&f.orders[1]),
                BookRefusal::OwnOrderMissing,
            ),
            (
                edited(&f, |b| b.price = Some(PricePerKwh(1))),
                None,
                BookRefusal::WrongClearing("price"),
            ),
            (
                edited(&f, |b| b.traded = WattHours(1)),
                None,
                BookRefusal::WrongClearing("energy traded"),
            ),
            (
                edited(&f, |b| b.income = Amount(1)),
                None,
                BookRefusal::WrongClearing("market income"),
            ),
            (
                edited(&f, |b| b.fills = [1; 32]),
                None,
                BookRefusal::WrongClearing("fills"),
            ),
        ];
        for (book, own, reason) in cases {
            assert_eq!(check(&f, &book, own), Err(reason.clone()), "{reason}");
        }
    }

    #[test]
    fn orders_that_are_not_the_members_are_refused() {
        let f = fixture();
        let member = signer(2);
        // An order for another interval, signed by its member.
        let mut other = order(&member, 0, 600);
        other.order.interval = IntervalIndex(39);
        let other = SignedOrder::sign(other.order, &member);
        let id = other.order.member;
        let replace = |o: SignedOrder| {
            edited(&f, |b| {
                b.orders.retain(|x| x.order.member != o.order.member);
                b.orders.push(o);
                b.orders.sort_by_key(|x| x.order.member);
            })
        };
        assert_eq!(
            check(&f, &replace(other), None),
            Err(BookRefusal::ForeignOrder(id))
        );
        // A pseudonym not on the roster.
        let outsider = order(&signer(9), 0, 50);
        let oid = outsider.order.member;
        assert_eq!(
            check(&f, &replace(outsider), None),
            Err(BookRefusal::NotAMember(oid))
        );
        // A member's order altered by the market node.
        let mut altered = f.orders[1];
        altered.order.import = WattHours(401);
        let aid = altered.order.member;
        assert_eq!(
            check(&f, &replace(altered), None),
            Err(BookRefusal::ForgedOrder(aid))
        );
        // The same, seen by the member whose receipted order it is: forged (its signature no
        // longer verifies) before anything else.
        assert_eq!(
            check(&f, &replace(altered), Some(&f.orders[1])),
            Err(BookRefusal::ForgedOrder(aid))
        );
    }

    #[test]
    fn a_receipted_order_replaced_by_another_signed_one_is_altered() {
        let f = fixture();
        let member = signer(3);
        // The member signed two orders; the market node took the first and published the second.
        let second = order(&member, 399, 0);
        let book = edited(&f, |b| {
            b.orders.retain(|x| x.order.member != second.order.member);
            b.orders.push(second);
            b.orders.sort_by_key(|x| x.order.member);
        });
        let book = {
            let orders = book.orders.clone();
            Book::close(&terms(), 900, AT, &f.roster, orders, &f.market)
                .unwrap()
                .0
        };
        assert_eq!(
            check(&f, &book, Some(&f.orders[1])),
            Err(BookRefusal::OwnOrderAltered)
        );
    }

    #[test]
    fn a_roster_must_be_sorted_and_signed() {
        let f = fixture();
        let mut r = f.roster.clone();
        r.members.reverse();
        r.sig = f.market.sign(&r.digest());
        assert_eq!(
            r.verify(&[7; 32], &f.market.id()),
            Err(BookRefusal::RosterMalformed)
        );
        assert_eq!(
            f.roster.verify(&[7; 32], &signer(9).id()),
            Err(BookRefusal::NotSignedByTheMarket)
        );
        assert_eq!(
            f.roster.verify(&[8; 32], &f.market.id()),
            Err(BookRefusal::WrongMarket)
        );
    }

    #[test]
    fn parts_make_the_publication_and_nothing_else() {
        let f = fixture();
        let parts = Parts::split(Topic::Book, AT.0, &f.book);
        let mut p = Parts::default();
        let mut done = None;
        for part in parts.iter().rev() {
            done = p.on_part(part.clone()).unwrap();
        }
        let (topic, key, bytes) = done.expect("complete");
        assert_eq!((topic, key), (Topic::Book, AT.0));
        assert_eq!(Parts::decode::<Book>(&bytes).unwrap(), f.book);
        // A big publication in several parts, one repeated, one conflicting.
        let big = vec![7u8; PART_BYTES * 2 + 5];
        let parts = Parts::split(Topic::Roster, 1, &big);
        assert_eq!(parts.len(), 3);
        let mut p = Parts::default();
        assert_eq!(p.on_part(parts[0].clone()), Ok(None));
        assert_eq!(
            p.on_part(parts[0].clone()),
            Ok(None),
            "a repeat is harmless"
        );
        let mut conflicting = parts[0].clone();
        conflicting.bytes[0] ^= 1;
        assert!(matches!(
            p.on_part(conflicting),
            Err(PartError::Conflicting { .. })
        ));
        let mut bad = parts[1].clone();
        bad.index = 3;
        assert!(matches!(p.on_part(bad), Err(PartError::Numbering { .. })));
        let mut huge = parts[1].clone();
        huge.count = u16::MAX;
        huge.index = 0;
        assert_eq!(p.on_part(huge), Err(PartError::TooLarge));
        assert!(Parts::decode::<Book>(&[1, 2, 3]).is_err());
    }
}

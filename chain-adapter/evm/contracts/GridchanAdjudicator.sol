// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// The part of ERC-20 the adjudicator uses.
interface IERC20 {
    function balanceOf(address account) external view returns (uint256);
    function allowance(address owner, address spender) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title The gridchan adjudicator
/// @notice Holds channel deposits in one ERC-20 settlement token and settles disputes by the
/// rules of `specs/adjudicator.md`; states, digests and signatures as in `specs/encoding.md`.
/// Every rule that refuses reverts with the error the local ledger names, and changes nothing.
/// @dev No owner, no upgrade, no pause: nobody can move a channel's tokens but its rules.
contract GridchanAdjudicator {
    bytes32 private constant STATE_DOMAIN = "gridchan.state.v2";
    bytes32 private constant STATE_DOMAIN_V3 = "gridchan.state.v3";
    bytes32 private constant PARAMS_DOMAIN = "gridchan.params.v1";
    /// Half the secp256k1 group order: a signature's `s` must not exceed it.
    uint256 private constant HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// The channel parameters (`specs/encoding.md`, "Channel parameters"); the tariff is named
    /// by its digest.
    struct Params {
        address partyA;
        address partyB;
        bytes32 nonce;
        uint64 depositA;
        uint64 depositB;
        uint64 challengeWindowBlocks;
        uint64 fundingWindowBlocks;
        uint64 intervalSeconds;
        uint64 toleranceAbsoluteWh;
        uint64 tolerancePermille;
        uint64 openedAt;
        bytes32 tariffDigest;
    }

    /// A channel state (`specs/encoding.md`, "State").
    struct State {
        bytes32 channelId;
        uint64 version;
        uint64 balanceA;
        uint64 balanceB;
        uint64 energyAToB;
        uint64 energyBToA;
        uint64 lastInterval;
        bool isFinal;
        /// The digest of the market book the state settles; zero for a tariff trade.
        bytes32 book;
        /// Top-ups and withdrawals while open, cumulative per party; all zero until the first
        /// (the digest is then version 2's).
        uint64 toppedUpA;
        uint64 toppedUpB;
        uint64 withdrawnA;
        uint64 withdrawnB;
    }

    /// A 65-byte signature `r || s || v` (`specs/encoding.md`, "Signatures").
    struct Sig {
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    enum Phase {
        None,
        Funding,
        Open,
        Registered,
        Concluded,
        Expired
    }

    struct Channel {
        address partyA;
        address partyB;
        uint64 depositA;
        uint64 depositB;
        uint64 challengeWindowBlocks;
        Phase phase;
        /// Funding: the last block a deposit is accepted in. Registered: the last block a
        /// refute is accepted in.
        uint64 deadline;
        uint64 depositedA;
        uint64 depositedB;
        uint64 claimableA;
        uint64 claimableB;
        /// The registered (or concluded) state.
        uint64 version;
        uint64 balanceA;
        uint64 balanceB;
        uint64 energyAToB;
        uint64 energyBToA;
        uint64 lastInterval;
        bytes32 book;
        /// Top-ups each party made and withdrawals paid each while open (cumulative).
        Funds funds;
        /// The registered (or concluded) state's own top-ups and withdrawals.
        Funds stateFunds;
    }

    /// Money added and taken out while a channel is open, cumulative per party.
    struct Funds {
        uint64 toppedUpA;
        uint64 toppedUpB;
        uint64 withdrawnA;
        uint64 withdrawnB;
    }

    IERC20 public immutable token;
    /// The shortest challenge window a channel may have, in blocks.
    uint64 public immutable minChallengeWindow;
    /// The longest challenge and funding windows any channel may have, in blocks: the
    /// protocol's limits (specs/adjudicator.md, "Limits"), the same on every ledger.
    uint64 public constant MAX_CHALLENGE_WINDOW = 10_000_000;
    uint64 public constant MAX_FUNDING_WINDOW = 10_000_000;
    /// The most operations one batch carries.
    uint256 public constant MAX_BATCH = 1_000;

    mapping(bytes32 => Channel) private channels;

    /// The first deposit of a channel: everything a follower needs to rebuild its parameters
    /// (the parties' 64-byte public keys, which hash to their addresses, and the tariff's
    /// encoding, which hashes to its digest).
    event Created(bytes32 indexed channelId, Params params, bytes keyA, bytes keyB, bytes tariff);
    event Deposited(bytes32 indexed channelId, uint8 party, uint64 amount);
    event Funded(bytes32 indexed channelId);
    event Reclaimed(bytes32 indexed channelId, uint8 party, uint64 amount);
    event Registered(bytes32 indexed channelId, uint64 version, uint64 deadline);
    event Refuted(bytes32 indexed channelId, uint64 version, uint64 deadline);
    event Concluded(bytes32 indexed channelId, uint64 version, uint64 payoutA, uint64 payoutB);
    event Withdrawn(bytes32 indexed channelId, uint8 party, uint64 amount);
    event ToppedUp(bytes32 indexed channelId, uint8 party, uint64 amount, uint64 total);
    event WithdrawnOpen(bytes32 indexed channelId, uint8 party, uint64 amount, uint64 total);
    /// Operation `index` of a batch reverted with `reason` (and changed nothing).
    event BatchItemFailed(uint256 index, bytes reason);

    error InsufficientBalance(uint256 balance, uint256 needed);
    error UnknownChannel();
    error NotAParty();
    error InvalidParams(string reason);
    error WrongDepositAmount(uint64 expected);
    error AlreadyDeposited();
    error WrongPhase(Phase phase);
    error FundingClosed(uint64 deadline);
    error FundingOpen(uint64 deadline);
    error BadStateSignature(string reason);
    error MoneyNotConserved();
    error NotNewer(uint64 registered, uint64 got);
    error Window(uint64 deadline);
    error FinalFlag();
    error InsufficientClaimable(uint64 claimable, uint64 needed);
    error TokenTransferFailed();
    /// The depositor has not approved the adjudicator to take the deposit.
    error InsufficientAllowance(uint256 allowance, uint256 needed);
    error TopUpNotMade();
    error WithdrawalNotInState();
    error NothingToWithdraw();
    error Overflow();
    error InvalidBatch(string reason);

    constructor(IERC20 token_, uint64 minChallengeWindow_) {
        token = token_;
        minChallengeWindow = minChallengeWindow_;
    }

    // ---------------------------------------------------------------- views

    /// The state digest the parties sign: `sha256(abi.encode(...))` of `specs/encoding.md`.
    function stateDigest(State calldata s) public pure returns (bytes32) {
        if ((s.toppedUpA | s.toppedUpB | s.withdrawnA | s.withdrawnB) != 0) {
            return sha256(
                bytes.concat(
                    abi.encode(
                        STATE_DOMAIN_V3,
                        s.channelId,
                        s.version,
                        s.balanceA,
                        s.balanceB,
                        s.energyAToB,
                        s.energyBToA,
                        s.lastInterval
                    ),
                    abi.encode(
                        s.isFinal, s.book, s.toppedUpA, s.toppedUpB, s.withdrawnA, s.withdrawnB
                    )
                )
            );
        }
        return sha256(
            abi.encode(
                STATE_DOMAIN,
                s.channelId,
                s.version,
                s.balanceA,
                s.balanceB,
                s.energyAToB,
                s.energyBToA,
                s.lastInterval,
                s.isFinal,
                s.book
            )
        );
    }

    /// The channel id: the digest of the parameters.
    function channelId(Params calldata p) public pure returns (bytes32) {
        return sha256(
            abi.encode(
                PARAMS_DOMAIN,
                p.partyA,
                p.partyB,
                p.nonce,
                p.depositA,
                p.depositB,
                p.challengeWindowBlocks,
                p.fundingWindowBlocks,
                p.intervalSeconds,
                p.toleranceAbsoluteWh,
                p.tolerancePermille,
                p.openedAt,
                p.tariffDigest
            )
        );
    }

    /// The signer of `digest`, under the rules of `specs/encoding.md`: `v` 27 or 28, low `s`,
    /// never the zero address.
    function signer(bytes32 digest, Sig calldata sig) public pure returns (address) {
        if (sig.v != 27 && sig.v != 28) revert BadStateSignature("v must be 27 or 28");
        if (uint256(sig.s) > HALF_ORDER) revert BadStateSignature("high s");
        address who = ecrecover(digest, sig.v, sig.r, sig.s);
        if (who == address(0)) revert BadStateSignature("no signer recovered");
        return who;
    }

    function channel(bytes32 id) external view returns (Channel memory) {
        return channels[id];
    }

    // ---------------------------------------------------------------- transactions

    /// Deposits the sender's share (`specs/adjudicator.md`, "Deposit"). The sender must have
    /// approved `amount` of the token to this contract. `keyA`, `keyB` (64-byte public keys)
    /// and `tariff` (the words whose SHA-256 is the tariff digest) are checked and published on
    /// the first deposit, so every follower can rebuild the parameters.
    function deposit(
        Params calldata p,
        bytes calldata keyA,
        bytes calldata keyB,
        bytes calldata tariff,
        uint64 amount
    ) external {
        _validate(p);
        uint8 party = _partyOf(p.partyA, p.partyB, msg.sender);
        uint64 expected = party == 0 ? p.depositA : p.depositB;
        if (amount != expected || amount == 0) revert WrongDepositAmount(expected);
        _checkFunds(msg.sender, amount);
        bytes32 id = channelId(p);
        Channel storage ch = channels[id];
        bool creating = ch.phase == Phase.None;
        if (creating) {
            if (keyA.length != 64 || address(uint160(uint256(keccak256(keyA)))) != p.partyA) {
                revert InvalidParams("keyA is not party A's public key");
            }
            if (keyB.length != 64 || address(uint160(uint256(keccak256(keyB)))) != p.partyB) {
                revert InvalidParams("keyB is not party B's public key");
            }
            if (sha256(tariff) != p.tariffDigest) {
                revert InvalidParams("tariff does not match its digest");
            }
            ch.partyA = p.partyA;
            ch.partyB = p.partyB;
            ch.depositA = p.depositA;
            ch.depositB = p.depositB;
            ch.challengeWindowBlocks = p.challengeWindowBlocks;
            ch.phase = Phase.Funding;
            ch.deadline = uint64(block.number) + p.fundingWindowBlocks;
        } else if (ch.phase != Phase.Funding) {
            revert WrongPhase(ch.phase);
        }
        if (block.number > ch.deadline) revert FundingClosed(ch.deadline);
        if ((party == 0 ? ch.depositedA : ch.depositedB) > 0) revert AlreadyDeposited();
        if (party == 0) ch.depositedA = amount;
        else ch.depositedB = amount;
        bool funded = ch.depositedA == p.depositA && ch.depositedB == p.depositB;
        if (funded) ch.phase = Phase.Open;
        if (creating) emit Created(id, p, keyA, keyB, tariff);
        emit Deposited(id, party, amount);
        if (funded) emit Funded(id);
        _pullExactly(msg.sender, amount);
    }

    /// Ends a channel whose funding window passed: every deposit made becomes claimable by
    /// the party that made it (`specs/adjudicator.md`, "Reclaim").
    function reclaim(bytes32 id) external {
        Channel storage ch = _existing(id);
        uint8 party = _partyOf(ch.partyA, ch.partyB, msg.sender);
        if (ch.phase != Phase.Funding) revert WrongPhase(ch.phase);
        if (block.number <= ch.deadline) revert FundingOpen(ch.deadline);
        ch.claimableA = ch.depositedA;
        ch.claimableB = ch.depositedB;
        ch.depositedA = 0;
        ch.depositedB = 0;
        ch.phase = Phase.Expired;
        emit Reclaimed(id, party, party == 0 ? ch.claimableA : ch.claimableB);
    }

    /// Starts a unilateral close with a state signed by both (`specs/adjudicator.md`,
    /// "Register"). Anyone may submit it.
    function register(State calldata s, Sig calldata sigA, Sig calldata sigB) external {
        Channel storage ch = _verified(s, sigA, sigB);
        if (s.isFinal) revert FinalFlag();
        if (ch.phase != Phase.Open) revert WrongPhase(ch.phase);
        uint64 deadline = uint64(block.number) + ch.challengeWindowBlocks;
        ch.phase = Phase.Registered;
        ch.deadline = deadline;
        _keep(ch, s);
        emit Registered(s.channelId, s.version, deadline);
    }

    /// Replaces a registered state with a newer one during the window; does not extend it
    /// (`specs/adjudicator.md`, "Refute"). Anyone may submit it, so a watchtower can.
    function refute(State calldata s, Sig calldata sigA, Sig calldata sigB) external {
        Channel storage ch = _verified(s, sigA, sigB);
        if (ch.phase != Phase.Registered) revert WrongPhase(ch.phase);
        if (block.number > ch.deadline) revert Window(ch.deadline);
        if (s.version <= ch.version) revert NotNewer(ch.version, s.version);
        _keep(ch, s);
        emit Refuted(s.channelId, s.version, ch.deadline);
    }

    /// After the window, pays out the newest state registered or refuted in time
    /// (`specs/adjudicator.md`, "Conclude"). Anyone may call it.
    function conclude(bytes32 id) external {
        Channel storage ch = _existing(id);
        if (ch.phase != Phase.Registered) revert WrongPhase(ch.phase);
        if (block.number <= ch.deadline) revert Window(ch.deadline);
        _payOut(id, ch);
    }

    /// Pays out a final state signed by both at once (`specs/adjudicator.md`,
    /// "Conclude-final").
    function concludeFinal(State calldata s, Sig calldata sigA, Sig calldata sigB) external {
        Channel storage ch = _verified(s, sigA, sigB);
        if (!s.isFinal) revert FinalFlag();
        if (ch.phase == Phase.Registered) {
            if (s.version <= ch.version) revert NotNewer(ch.version, s.version);
        } else if (ch.phase != Phase.Open) {
            revert WrongPhase(ch.phase);
        }
        _keep(ch, s);
        _payOut(s.channelId, ch);
    }

    /// Adds `amount` of the sender's tokens to its open channel (`specs/adjudicator.md`,
    /// "Top-up"). The sender must have approved `amount` of the token to this contract.
    function topUp(bytes32 id, uint64 amount) external {
        Channel storage ch = _existing(id);
        uint8 party = _partyOf(ch.partyA, ch.partyB, msg.sender);
        if (ch.phase != Phase.Open) revert WrongPhase(ch.phase);
        if (amount == 0) revert WrongDepositAmount(1);
        uint256 total = uint256(party == 0 ? ch.funds.toppedUpA : ch.funds.toppedUpB) + amount;
        if (total > type(uint64).max || _held(ch) + amount > type(uint64).max) revert Overflow();
        _checkFunds(msg.sender, amount);
        if (party == 0) ch.funds.toppedUpA = uint64(total);
        else ch.funds.toppedUpB = uint64(total);
        emit ToppedUp(id, party, amount, uint64(total));
        _pullExactly(msg.sender, amount);
    }

    /// Pays the withdrawals a state signed by both makes that the channel has not paid yet; the
    /// channel stays open (`specs/adjudicator.md`, "Withdraw while open"). Anyone may submit it.
    function withdrawOpen(State calldata s, Sig calldata sigA, Sig calldata sigB) external {
        Channel storage ch = _verified(s, sigA, sigB);
        if (s.isFinal) revert FinalFlag();
        if (ch.phase != Phase.Open) revert WrongPhase(ch.phase);
        uint64 dueA = s.withdrawnA - ch.funds.withdrawnA;
        uint64 dueB = s.withdrawnB - ch.funds.withdrawnB;
        if (dueA == 0 && dueB == 0) revert NothingToWithdraw();
        ch.funds.withdrawnA = s.withdrawnA;
        ch.funds.withdrawnB = s.withdrawnB;
        if (dueA > 0) emit WithdrawnOpen(s.channelId, 0, dueA, s.withdrawnA);
        if (dueB > 0) emit WithdrawnOpen(s.channelId, 1, dueB, s.withdrawnB);
        if (dueA > 0) _send(ch.partyA, dueA);
        if (dueB > 0) _send(ch.partyB, dueB);
    }

    /// Several of the sender's operations (calls of this contract) in one transaction, each on
    /// its own: one that reverts is reported (`BatchItemFailed`) and changes nothing, the others
    /// go on (`specs/adjudicator.md`, "Batch"). Each runs as if the sender had called it.
    function batch(bytes[] calldata calls) external {
        if (calls.length == 0 || calls.length > MAX_BATCH) revert InvalidBatch("1 to 1000 operations");
        for (uint256 i = 0; i < calls.length; i++) {
            if (calls[i].length >= 4 && bytes4(calls[i][:4]) == this.batch.selector) {
                revert InvalidBatch("a batch inside a batch");
            }
            uint256 before = gasleft();
            (bool ok, bytes memory reason) = address(this).delegatecall(calls[i]);
            if (!ok) {
                // An operation that ran out of gas is the sender's gas limit, not the
                // operation's fault: the whole batch fails, so a gas estimate never settles on
                // a limit that starves the operations and reports them as refused.
                if (gasleft() <= before / 63) revert InvalidBatch("out of gas");
                emit BatchItemFailed(i, reason);
            }
        }
    }

    /// Moves `amount` of the sender's payout or refund to the sender (`specs/adjudicator.md`,
    /// "Withdraw").
    function withdraw(bytes32 id, uint64 amount) external {
        Channel storage ch = _existing(id);
        uint8 party = _partyOf(ch.partyA, ch.partyB, msg.sender);
        uint64 claimable = party == 0 ? ch.claimableA : ch.claimableB;
        if (amount > claimable) revert InsufficientClaimable(claimable, amount);
        if (party == 0) ch.claimableA = claimable - amount;
        else ch.claimableB = claimable - amount;
        emit Withdrawn(id, party, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- internals

    function _validate(Params calldata p) private view {
        if (p.partyA == p.partyB) revert InvalidParams("both parties are the same key");
        if (p.partyA == address(0) || p.partyB == address(0)) {
            revert InvalidParams("a party is the zero address");
        }
        if (uint256(p.depositA) + uint256(p.depositB) > type(uint64).max) {
            revert InvalidParams("the deposits overflow");
        }
        if (p.depositA == 0 && p.depositB == 0) revert InvalidParams("no deposit");
        if (p.intervalSeconds == 0 || p.intervalSeconds > 3600 || 3600 % p.intervalSeconds != 0) {
            revert InvalidParams("the interval does not divide an hour");
        }
        if (p.challengeWindowBlocks < minChallengeWindow) {
            revert InvalidParams("the challenge window is shorter than the ledger's minimum");
        }
        if (p.challengeWindowBlocks > MAX_CHALLENGE_WINDOW) {
            revert InvalidParams("the challenge window is longer than the protocol's maximum");
        }
        if (p.fundingWindowBlocks == 0) revert InvalidParams("no funding window");
        if (p.fundingWindowBlocks > MAX_FUNDING_WINDOW) {
            revert InvalidParams("the funding window is longer than the protocol's maximum");
        }
    }

    function _partyOf(address a, address b, address who) private pure returns (uint8) {
        if (who == a) return 0;
        if (who == b) return 1;
        revert NotAParty();
    }

    function _existing(bytes32 id) private view returns (Channel storage ch) {
        ch = channels[id];
        if (ch.phase == Phase.None) revert UnknownChannel();
    }

    /// The channel of a state signed by both of its parties that holds the channel's money.
    function _verified(State calldata s, Sig calldata sigA, Sig calldata sigB)
        private
        view
        returns (Channel storage ch)
    {
        ch = _existing(s.channelId);
        bytes32 digest = stateDigest(s);
        if (signer(digest, sigA) != ch.partyA) revert BadStateSignature("not signed by party A");
        if (signer(digest, sigB) != ch.partyB) revert BadStateSignature("not signed by party B");
        uint256 held = uint256(ch.depositA) + ch.depositB + s.toppedUpA + s.toppedUpB;
        uint256 taken = uint256(s.withdrawnA) + s.withdrawnB;
        if (taken > held || uint256(s.balanceA) + s.balanceB != held - taken) {
            revert MoneyNotConserved();
        }
        if (s.toppedUpA > ch.funds.toppedUpA || s.toppedUpB > ch.funds.toppedUpB) revert TopUpNotMade();
        if (s.withdrawnA < ch.funds.withdrawnA || s.withdrawnB < ch.funds.withdrawnB) {
            revert WithdrawalNotInState();
        }
    }

    /// What an open channel holds: the deposits, plus top-ups, less withdrawals paid.
    function _held(Channel storage ch) private view returns (uint256) {
        return uint256(ch.depositA) + ch.depositB + ch.funds.toppedUpA + ch.funds.toppedUpB - ch.funds.withdrawnA
            - ch.funds.withdrawnB;
    }

    function _keep(Channel storage ch, State calldata s) private {
        ch.version = s.version;
        ch.balanceA = s.balanceA;
        ch.balanceB = s.balanceB;
        ch.energyAToB = s.energyAToB;
        ch.energyBToA = s.energyBToA;
        ch.lastInterval = s.lastInterval;
        ch.book = s.book;
        ch.stateFunds.toppedUpA = s.toppedUpA;
        ch.stateFunds.toppedUpB = s.toppedUpB;
        ch.stateFunds.withdrawnA = s.withdrawnA;
        ch.stateFunds.withdrawnB = s.withdrawnB;
    }

    /// Pays the kept state: each party its balance, plus its top-ups the state does not count,
    /// plus its withdrawals the state makes and the channel has not paid
    /// (`specs/adjudicator.md`, "Payout").
    function _payOut(bytes32 id, Channel storage ch) private {
        uint256 a = uint256(ch.balanceA) + (ch.funds.toppedUpA - ch.stateFunds.toppedUpA)
            + (ch.stateFunds.withdrawnA - ch.funds.withdrawnA);
        uint256 b = uint256(ch.balanceB) + (ch.funds.toppedUpB - ch.stateFunds.toppedUpB)
            + (ch.stateFunds.withdrawnB - ch.funds.withdrawnB);
        if (a > type(uint64).max || b > type(uint64).max) revert Overflow();
        ch.claimableA = uint64(a);
        ch.claimableB = uint64(b);
        ch.depositedA = 0;
        ch.depositedB = 0;
        ch.funds.toppedUpA = 0;
        ch.funds.toppedUpB = 0;
        ch.funds.withdrawnA = 0;
        ch.funds.withdrawnB = 0;
        ch.phase = Phase.Concluded;
        emit Concluded(id, ch.version, uint64(a), uint64(b));
    }

    function _checkFunds(address from, uint64 amount) private view {
        uint256 balance = token.balanceOf(from);
        if (balance < amount) revert InsufficientBalance(balance, amount);
        uint256 allowed = token.allowance(from, address(this));
        if (allowed < amount) revert InsufficientAllowance(allowed, amount);
    }

    /// Takes exactly `amount` from `from`: a token that delivers less (a fee on transfer) is
    /// refused, so the channel never holds less than its states pay out.
    function _pullExactly(address from, uint64 amount) private {
        uint256 before = token.balanceOf(address(this));
        _call(abi.encodeCall(IERC20.transferFrom, (from, address(this), amount)));
        if (token.balanceOf(address(this)) != before + amount) revert TokenTransferFailed();
    }

    function _send(address to, uint64 amount) private {
        _call(abi.encodeCall(IERC20.transfer, (to, amount)));
    }

    /// Calls the token, accepting tokens that return nothing as well as `true`.
    function _call(bytes memory data) private {
        (bool ok, bytes memory ret) = address(token).call(data);
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TokenTransferFailed();
    }
}

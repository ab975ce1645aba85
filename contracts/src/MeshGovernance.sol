// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {MeshParameters} from "./MeshParameters.sol";
import {OperatorRegistry} from "./OperatorRegistry.sol";
import {ProposalFactory} from "./ProposalFactory.sol";
import {QuadraticVoting} from "./QuadraticVoting.sol";

/// @title MeshGovernance
/// @notice The proposal lifecycle of the mesh's operators, with the states of OpenZeppelin's
/// Governor (Pending, Active, Canceled, Defeated, Succeeded, Queued, Expired, Executed),
/// quadratic counting (QuadraticVoting), proposals from templates (ProposalFactory), liquid
/// delegation read at the proposal's snapshot (OperatorRegistry), a quorum as a percentage of
/// the operators registered at the snapshot, and a Bravo-style timelock: a queued proposal can
/// be executed from its eta until eta + gracePeriod, after which it has expired.
///
/// Timeline (timestamps): propose at t; snapshot = t + votingDelay (Pending while
/// now <= snapshot); Active while snapshot < now <= deadline = snapshot + votingPeriod.
contract MeshGovernance is ProposalFactory, QuadraticVoting {
    enum ProposalState {
        Pending,
        Active,
        Canceled,
        Defeated,
        Succeeded,
        Queued,
        Expired,
        Executed
    }

    struct Proposal {
        address proposer;
        Template template;
        uint48 voteStart;
        uint48 voteEnd;
        uint48 eta;
        bool canceled;
        bool executed;
        address target;
        bytes data;
        bytes32 descriptionHash;
    }

    uint48 public immutable votingDelay;
    uint48 public immutable votingPeriod;
    uint48 public immutable timelockDelay;
    uint48 public immutable gracePeriod;
    uint256 public immutable quorumPercent;

    uint256 public proposalCount;
    mapping(uint256 => Proposal) private _proposals;

    event ProposalCreated(
        uint256 indexed proposalId,
        address indexed proposer,
        Template template,
        address target,
        bytes data,
        uint48 voteStart,
        uint48 voteEnd,
        string description
    );
    event ProposalCanceled(uint256 indexed proposalId);
    event ProposalQueued(uint256 indexed proposalId, uint48 eta);
    /// `result`: what the governed call returned (empty for every template's call).
    event ProposalExecuted(uint256 indexed proposalId, bytes result);

    constructor(
        MeshParameters parameters_,
        OperatorRegistry registry_,
        uint48 votingDelay_,
        uint48 votingPeriod_,
        uint48 timelockDelay_,
        uint48 gracePeriod_,
        uint256 quorumPercent_
    ) ProposalFactory(parameters_, registry_) {
        require(votingPeriod_ > 0, "governance: zero voting period");
        require(gracePeriod_ > 0, "governance: zero grace period");
        require(quorumPercent_ > 0 && quorumPercent_ <= 100, "governance: quorum out of range");
        votingDelay = votingDelay_;
        votingPeriod = votingPeriod_;
        timelockDelay = timelockDelay_;
        gracePeriod = gracePeriod_;
        quorumPercent = quorumPercent_;
    }

    function clock() public view returns (uint48) {
        return SafeCast.toUint48(block.timestamp);
    }

    function _propose(Template template, address target, bytes memory data, string calldata description)
        internal
        override
        returns (uint256 id)
    {
        require(registry.isOperator(msg.sender), "governance: proposer is not an operator");
        require(bytes(description).length > 0, "factory: empty description");
        require(bytes(description).length <= MAX_DESCRIPTION, "factory: description too long");
        id = ++proposalCount;
        uint48 start = clock() + votingDelay;
        uint48 end = start + votingPeriod;
        Proposal storage p = _proposals[id];
        p.proposer = msg.sender;
        p.template = template;
        p.voteStart = start;
        p.voteEnd = end;
        p.target = target;
        p.data = data;
        p.descriptionHash = keccak256(bytes(description));
        emit ProposalCreated(id, msg.sender, template, target, data, start, end, description);
    }

    function proposal(uint256 proposalId)
        external
        view
        returns (
            address proposer,
            Template template,
            uint48 voteStart,
            uint48 voteEnd,
            uint48 eta,
            address target,
            bytes memory data,
            bytes32 descriptionHash
        )
    {
        Proposal storage p = _known(proposalId);
        return (p.proposer, p.template, p.voteStart, p.voteEnd, p.eta, p.target, p.data, p.descriptionHash);
    }

    function state(uint256 proposalId) public view returns (ProposalState) {
        Proposal storage p = _known(proposalId);
        if (p.executed) return ProposalState.Executed;
        if (p.canceled) return ProposalState.Canceled;
        uint48 now_ = clock();
        if (now_ <= p.voteStart) return ProposalState.Pending;
        if (now_ <= p.voteEnd) return ProposalState.Active;
        (uint256 againstVotes, uint256 forVotes,, uint256 represented, uint256 eligible) = proposalVotes(proposalId);
        if (!_quorumReached(represented, eligible) || forVotes <= againstVotes) return ProposalState.Defeated;
        if (p.eta == 0) return ProposalState.Succeeded;
        if (now_ > uint256(p.eta) + gracePeriod) return ProposalState.Expired;
        return ProposalState.Queued;
    }

    function _quorumReached(uint256 represented, uint256 eligible) private view returns (bool) {
        return represented * 100 >= quorumPercent * eligible;
    }

    /// Operators needed for the quorum of a proposal (registered at its snapshot).
    function quorum(uint256 proposalId) external view returns (uint256) {
        Proposal storage p = _known(proposalId);
        uint256 eligible = registry.operatorCountAt(p.voteStart);
        return (quorumPercent * eligible + 99) / 100;
    }

    /// The tally with liquid delegation at the snapshot: each operator registered at the
    /// snapshot counts with the ballot of the first operator on its delegation chain who voted
    /// directly (itself first: a direct vote overrides its delegation). `represented` counts
    /// the operators whose power was cast, directly or through delegation.
    function proposalVotes(uint256 proposalId)
        public
        view
        returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes, uint256 represented, uint256 eligibleCount)
    {
        Proposal storage p = _known(proposalId);
        (address[] memory ops, bool[] memory eligible, uint256[] memory delegateIndex, uint256 count) =
            registry.snapshot(p.voteStart);
        uint256[] memory resolved = _resolve(proposalId, ops, eligible, delegateIndex);
        uint256[4] memory totals = [uint256(0), 0, 0, 0]; // against, for, abstain, represented
        for (uint256 i = 0; i < ops.length; i++) {
            if (eligible[i] && resolved[i] <= ops.length) {
                _addBallot(totals, proposalId, ops[resolved[i] - 1]);
            }
        }
        return (totals[0], totals[1], totals[2], totals[3], count);
    }

    function _addBallot(uint256[4] memory totals, uint256 proposalId, address voter) private view {
        (uint256 a, uint256 f, uint256 s) = ballotOf(proposalId, voter);
        totals[0] += a;
        totals[1] += f;
        totals[2] += s;
        totals[3] += 1;
    }

    /// For each operator i, 1 + the index of the operator whose ballot casts i's power, or
    /// n + 1 when nobody's does. Each chain is walked once (memoised along its path).
    function _resolve(uint256 proposalId, address[] memory ops, bool[] memory eligible, uint256[] memory delegateIndex)
        private
        view
        returns (uint256[] memory resolved)
    {
        uint256 n = ops.length;
        resolved = new uint256[](n);
        uint256[] memory path = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            if (resolved[i] != 0) continue;
            uint256 len = 0;
            uint256 cur = i;
            uint256 result;
            while (true) {
                if (resolved[cur] != 0) {
                    result = resolved[cur];
                    break;
                }
                path[len++] = cur;
                if (!eligible[cur]) {
                    result = n + 1;
                    break;
                }
                if (hasVoted(proposalId, ops[cur])) {
                    result = cur + 1;
                    break;
                }
                if (delegateIndex[cur] == 0 || len == n) {
                    result = n + 1;
                    break;
                }
                cur = delegateIndex[cur] - 1;
            }
            for (uint256 k = 0; k < len; k++) {
                resolved[path[k]] = result;
            }
        }
    }

    function castVote(uint256 proposalId, uint8 support, uint256 votes) external returns (uint256 used) {
        require(state(proposalId) == ProposalState.Active, "governance: vote outside the voting window");
        require(
            registry.isOperatorAt(msg.sender, _proposals[proposalId].voteStart),
            "governance: not an operator at the snapshot"
        );
        return _castQuadratic(proposalId, msg.sender, support, votes);
    }

    function cancel(uint256 proposalId) external {
        ProposalState s = state(proposalId);
        require(msg.sender == _proposals[proposalId].proposer, "governance: only the proposer can cancel");
        require(s == ProposalState.Pending, "governance: proposal not pending");
        _proposals[proposalId].canceled = true;
        emit ProposalCanceled(proposalId);
    }

    function queue(uint256 proposalId) external returns (uint48 eta) {
        require(state(proposalId) == ProposalState.Succeeded, "governance: proposal not successful");
        eta = clock() + timelockDelay;
        _proposals[proposalId].eta = eta;
        emit ProposalQueued(proposalId, eta);
    }

    function execute(uint256 proposalId) external {
        require(state(proposalId) == ProposalState.Queued, "governance: proposal not queued");
        Proposal storage p = _proposals[proposalId];
        require(clock() >= p.eta, "governance: timelock not elapsed");
        p.executed = true;
        bytes memory result = Address.functionCall(p.target, p.data);
        emit ProposalExecuted(proposalId, result);
    }

    function _known(uint256 proposalId) private view returns (Proposal storage p) {
        require(proposalId > 0 && proposalId <= proposalCount, "governance: unknown proposal");
        return _proposals[proposalId];
    }
}

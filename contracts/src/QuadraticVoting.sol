// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title QuadraticVoting
/// @notice Quadratic vote counting: every registered operator holds VOICE_CREDITS voice
/// credits per proposal; a ballot of a, f and s votes against, for and abstain costs
/// a^2 + f^2 + s^2 credits. An operator may add votes to a ballot while the vote is open, as
/// long as the whole ballot stays within the credits.
abstract contract QuadraticVoting {
    uint256 public constant VOICE_CREDITS = 100;

    /// The Governor's order: 0 against, 1 for, 2 abstain.
    enum VoteType {
        Against,
        For,
        Abstain
    }

    mapping(uint256 => mapping(address => uint256[3])) private _ballots;
    mapping(uint256 => mapping(address => bool)) private _voted;

    event VoteCast(address indexed voter, uint256 indexed proposalId, uint8 support, uint256 votes, uint256 creditsUsed);

    function quadraticCost(uint256 votes) public pure returns (uint256) {
        return votes * votes;
    }

    function _castQuadratic(uint256 proposalId, address voter, uint8 support, uint256 votes)
        internal
        returns (uint256 used)
    {
        require(support <= uint8(VoteType.Abstain), "qv: invalid vote type");
        require(votes > 0, "qv: zero votes");
        require(votes <= VOICE_CREDITS, "qv: insufficient voice credits");
        uint256[3] storage ballot = _ballots[proposalId][voter];
        uint256 added = ballot[support] + votes;
        for (uint256 i = 0; i < 3; i++) {
            uint256 v = i == support ? added : ballot[i];
            used += v * v;
        }
        require(used <= VOICE_CREDITS, "qv: insufficient voice credits");
        ballot[support] = added;
        _voted[proposalId][voter] = true;
        emit VoteCast(voter, proposalId, support, votes, used);
    }

    function hasVoted(uint256 proposalId, address voter) public view returns (bool) {
        return _voted[proposalId][voter];
    }

    /// The voter's own ballot (not what it receives through delegation).
    function ballotOf(uint256 proposalId, address voter)
        public
        view
        returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes)
    {
        uint256[3] storage b = _ballots[proposalId][voter];
        return (b[0], b[1], b[2]);
    }

    function creditsUsed(uint256 proposalId, address voter) external view returns (uint256) {
        uint256[3] storage b = _ballots[proposalId][voter];
        return b[0] * b[0] + b[1] * b[1] + b[2] * b[2];
    }
}

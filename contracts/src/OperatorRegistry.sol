// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title OperatorRegistry
/// @notice The node operators of the mesh and their liquid delegation. Operators are admitted
/// and removed by holders of REGISTRAR_ROLE (the deployer, and MeshGovernance itself so that a
/// proposal can admit an operator). Each operator holds one unit of voting power.
///
/// Delegation is liquid: an operator may delegate to another operator, who may delegate
/// further (transitive). A delegation that would close a cycle is refused at delegation time,
/// so the delegation graph is a forest at every instant. Membership and delegation are
/// checkpointed by timestamp, so a proposal reads them as they were at its snapshot.
contract OperatorRegistry is AccessControl {
    using Checkpoints for Checkpoints.Trace208;
    using Checkpoints for Checkpoints.Trace160;

    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    /// Bound on the operators ever admitted, so that a tally's loop has a bounded cost.
    uint256 public constant MAX_OPERATORS = 256;

    address[] private _operators;
    mapping(address => uint256) private _indexPlusOne;
    mapping(address => Checkpoints.Trace208) private _member;
    Checkpoints.Trace208 private _count;
    mapping(address => Checkpoints.Trace160) private _delegate;

    /// An operator was admitted (wasMember false, isMember true) or removed.
    event MembershipChanged(address indexed operator, bool wasMember, bool isMember);
    event OperatorCountChanged(uint256 previousCount, uint256 newCount);
    event DelegateChanged(address indexed operator, address indexed from, address indexed to);

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(REGISTRAR_ROLE, admin);
    }

    function clock() public view returns (uint48) {
        return SafeCast.toUint48(block.timestamp);
    }

    function admit(address operator) external {
        require(hasRole(REGISTRAR_ROLE, msg.sender), "registry: caller is not a registrar");
        require(operator != address(0), "registry: zero address");
        require(!isOperator(operator), "registry: already an operator");
        if (_indexPlusOne[operator] == 0) {
            require(_operators.length < MAX_OPERATORS, "registry: registry is full");
            _operators.push(operator);
            _indexPlusOne[operator] = _operators.length;
        }
        _setMember(operator, 1);
    }

    function remove(address operator) external {
        require(hasRole(REGISTRAR_ROLE, msg.sender), "registry: caller is not a registrar");
        require(isOperator(operator), "registry: not an operator");
        _setMember(operator, 0);
        if (delegateOf(operator) != address(0)) _setDelegate(operator, address(0));
    }

    /// Delegate the caller's voting power to `to`, replacing any earlier delegation.
    function delegate(address to) external {
        require(isOperator(msg.sender), "registry: not an operator");
        require(to != msg.sender, "registry: self delegation");
        require(isOperator(to), "registry: delegate is not an operator");
        // The graph is acyclic, so this walk ends; it meets the caller iff `to` leads back.
        for (address cur = to; cur != address(0); cur = delegateOf(cur)) {
            require(cur != msg.sender, "registry: delegation cycle");
        }
        _setDelegate(msg.sender, to);
    }

    function undelegate() external {
        require(isOperator(msg.sender), "registry: not an operator");
        require(delegateOf(msg.sender) != address(0), "registry: no delegation");
        _setDelegate(msg.sender, address(0));
    }

    /// Checkpoints membership (1 or 0) and the operator count, and reports both changes with
    /// the previous and new values that Checkpoints.push returns (as OpenZeppelin's Votes
    /// reports DelegateVotesChanged).
    function _setMember(address operator, uint208 member) private {
        (uint208 was, uint208 isNow) = _member[operator].push(clock(), member);
        emit MembershipChanged(operator, was > 0, isNow > 0);
        uint208 latest = _count.latest();
        (uint208 before, uint208 count) = _count.push(clock(), member > 0 ? latest + 1 : latest - 1);
        emit OperatorCountChanged(before, count);
    }

    function _setDelegate(address operator, address to) private {
        (uint160 from, uint160 now_) = _delegate[operator].push(SafeCast.toUint96(block.timestamp), uint160(to));
        emit DelegateChanged(operator, address(from), address(now_));
    }

    function isOperator(address account) public view returns (bool) {
        return _member[account].latest() == 1;
    }

    function isOperatorAt(address account, uint48 timepoint) public view returns (bool) {
        return _member[account].upperLookup(timepoint) == 1;
    }

    function operatorCount() external view returns (uint256) {
        return _count.latest();
    }

    function operatorCountAt(uint48 timepoint) public view returns (uint256) {
        return _count.upperLookup(timepoint);
    }

    function delegateOf(address account) public view returns (address) {
        return address(_delegate[account].latest());
    }

    function delegateAt(address account, uint48 timepoint) public view returns (address) {
        return address(_delegate[account].upperLookup(timepoint));
    }

    /// Operators ever admitted, in order of first admission.
    function operatorsEver() external view returns (address[] memory) {
        return _operators;
    }

    /// The membership and delegation graph at `timepoint`, indexed like operatorsEver():
    /// eligible[i] says whether operator i was a member, delegateIndex[i] is 1 + the index of
    /// its delegate (0: none), and count is the number of members.
    function snapshot(uint48 timepoint)
        external
        view
        returns (address[] memory operators, bool[] memory eligible, uint256[] memory delegateIndex, uint256 count)
    {
        uint256 n = _operators.length;
        operators = _operators;
        eligible = new bool[](n);
        delegateIndex = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            address op = _operators[i];
            eligible[i] = _member[op].upperLookup(timepoint) == 1;
            address d = address(_delegate[op].upperLookup(SafeCast.toUint96(timepoint)));
            delegateIndex[i] = d == address(0) ? 0 : _indexPlusOne[d];
        }
        count = _count.upperLookup(timepoint);
    }
}

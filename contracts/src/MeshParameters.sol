// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title MeshParameters
/// @notice The mesh's governed state: protocol parameters (named by their dotted keys in a
/// node's configuration, e.g. `protocol.probe_interval_ms`, each with bounds), the node ban
/// list, key-rotation orders and the admission policy. Its owner is MeshGovernance: every
/// change is the execution of a proposal that passed.
contract MeshParameters is Ownable {
    struct Parameter {
        uint256 value;
        uint256 min;
        uint256 max;
        bool known;
    }

    mapping(bytes32 => Parameter) private _parameters;
    string[] private _names;

    /// keccak256 of a node's SPIFFE ID => banned
    mapping(bytes32 => bool) public banned;
    uint256 public bannedCount;
    /// keccak256 of a node's SPIFFE ID (or zero for the whole trust domain) => the time from
    /// which SVIDs issued before it are no longer accepted
    mapping(bytes32 => uint256) public keyRotatedAt;
    bytes32 public policyHash;
    string public policyUri;

    event ParameterChanged(bytes32 indexed key, string name, uint256 oldValue, uint256 newValue);
    event NodeBanned(bytes32 indexed nodeId, string reason);
    event KeyRotationOrdered(bytes32 indexed nodeId, uint256 at);
    event PolicyChanged(bytes32 policyHash, string uri);

    constructor(address initialOwner) Ownable(initialOwner) {
        _define("protocol.probe_interval_ms", 50, 10, 10_000);
        _define("protocol.spf_delay_ms", 5, 0, 1_000);
        _define("protocol.flood_retransmit_ms", 100, 10, 10_000);
        _define("protocol.lsa_refresh_ms", 30_000, 1_000, 600_000);
        _define("protocol.cost_update_interval_ms", 1_000, 100, 60_000);
        _define("protocol.beacon_interval_ms", 250, 50, 60_000);
    }

    function _define(string memory name, uint256 value, uint256 min, uint256 max) private {
        bytes32 key = keccak256(bytes(name));
        _parameters[key] = Parameter(value, min, max, true);
        _names.push(name);
    }

    function parameterCount() external view returns (uint256) {
        return _names.length;
    }

    function parameterName(uint256 index) external view returns (string memory) {
        return _names[index];
    }

    function isKnown(bytes32 key) public view returns (bool) {
        return _parameters[key].known;
    }

    function inBounds(bytes32 key, uint256 value) public view returns (bool) {
        Parameter storage p = _parameters[key];
        return p.known && value >= p.min && value <= p.max;
    }

    function getParameter(bytes32 key) external view returns (uint256 value, uint256 min, uint256 max) {
        Parameter storage p = _parameters[key];
        require(p.known, "parameters: unknown parameter");
        return (p.value, p.min, p.max);
    }

    function setParameter(bytes32 key, uint256 value) external onlyOwner {
        Parameter storage p = _parameters[key];
        require(p.known, "parameters: unknown parameter");
        require(value >= p.min && value <= p.max, "parameters: value out of bounds");
        uint256 old = p.value;
        p.value = value;
        emit ParameterChanged(key, _nameOf(key), old, value);
    }

    function banNode(bytes32 nodeId, string calldata reason) external onlyOwner {
        require(nodeId != bytes32(0), "parameters: zero node id");
        require(!banned[nodeId], "parameters: node already banned");
        banned[nodeId] = true;
        bannedCount += 1;
        emit NodeBanned(nodeId, reason);
    }

    function rotateKey(bytes32 nodeId) external onlyOwner {
        require(!banned[nodeId], "parameters: node is banned");
        keyRotatedAt[nodeId] = block.timestamp;
        emit KeyRotationOrdered(nodeId, block.timestamp);
    }

    function setPolicy(bytes32 hash, string calldata uri) external onlyOwner {
        require(hash != bytes32(0), "parameters: zero policy hash");
        policyHash = hash;
        policyUri = uri;
        emit PolicyChanged(hash, uri);
    }

    function _nameOf(bytes32 key) private view returns (string memory) {
        uint256 n = _names.length;
        for (uint256 i = 0; i < n; i++) {
            if (keccak256(bytes(_names[i])) == key) return _names[i];
        }
        return "";
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MeshParameters} from "./MeshParameters.sol";
import {OperatorRegistry} from "./OperatorRegistry.sol";

/// @title ProposalFactory
/// @notice Proposals are made only from templates whose arguments are validated here, so a
/// proposal that passes can only make one of these calls: change a governed parameter within
/// its bounds, ban a node, order a key rotation, change the admission policy, or admit an
/// operator.
abstract contract ProposalFactory {
    enum Template {
        ParameterChange,
        NodeBan,
        KeyRotation,
        PolicyChange,
        AdmitOperator
    }

    uint256 public constant MAX_DESCRIPTION = 10_000;
    uint256 public constant MAX_REASON = 280;
    uint256 public constant MAX_URI = 256;
    uint256 public constant MAX_SPIFFE_ID = 2048;

    MeshParameters public immutable parameters;
    OperatorRegistry public immutable registry;

    constructor(MeshParameters parameters_, OperatorRegistry registry_) {
        parameters = parameters_;
        registry = registry_;
    }

    function _propose(Template template, address target, bytes memory data, string calldata description)
        internal
        virtual
        returns (uint256);

    function proposeParameterChange(string calldata name, uint256 value, string calldata description)
        external
        returns (uint256)
    {
        bytes32 key = keccak256(bytes(name));
        require(parameters.isKnown(key), "factory: unknown parameter");
        require(parameters.inBounds(key, value), "factory: value out of bounds");
        return _propose(
            Template.ParameterChange,
            address(parameters),
            abi.encodeCall(MeshParameters.setParameter, (key, value)),
            description
        );
    }

    function proposeNodeBan(string calldata spiffeId, string calldata reason, string calldata description)
        external
        returns (uint256)
    {
        require(_isSpiffeId(spiffeId), "factory: malformed SPIFFE ID");
        require(bytes(reason).length > 0, "factory: empty reason");
        require(bytes(reason).length <= MAX_REASON, "factory: reason too long");
        bytes32 nodeId = keccak256(bytes(spiffeId));
        require(!parameters.banned(nodeId), "factory: node already banned");
        return _propose(
            Template.NodeBan, address(parameters), abi.encodeCall(MeshParameters.banNode, (nodeId, reason)), description
        );
    }

    /// An empty `spiffeId` orders the rotation of every key in the trust domain.
    function proposeKeyRotation(string calldata spiffeId, string calldata description) external returns (uint256) {
        bytes32 nodeId = bytes32(0);
        if (bytes(spiffeId).length > 0) {
            require(_isSpiffeId(spiffeId), "factory: malformed SPIFFE ID");
            nodeId = keccak256(bytes(spiffeId));
            require(!parameters.banned(nodeId), "factory: node is banned");
        }
        return _propose(
            Template.KeyRotation, address(parameters), abi.encodeCall(MeshParameters.rotateKey, (nodeId)), description
        );
    }

    function proposePolicyChange(bytes32 policyHash, string calldata uri, string calldata description)
        external
        returns (uint256)
    {
        require(policyHash != bytes32(0), "factory: zero policy hash");
        require(bytes(uri).length > 0 && bytes(uri).length <= MAX_URI, "factory: malformed policy URI");
        return _propose(
            Template.PolicyChange,
            address(parameters),
            abi.encodeCall(MeshParameters.setPolicy, (policyHash, uri)),
            description
        );
    }

    function proposeAdmitOperator(address operator, string calldata description) external returns (uint256) {
        require(operator != address(0), "factory: zero address");
        require(!registry.isOperator(operator), "factory: already an operator");
        return _propose(
            Template.AdmitOperator, address(registry), abi.encodeCall(OperatorRegistry.admit, (operator)), description
        );
    }

    /// `spiffe://` followed by a non-empty trust domain, at most MAX_SPIFFE_ID bytes.
    function _isSpiffeId(string calldata id) private pure returns (bool) {
        bytes calldata b = bytes(id);
        if (b.length <= 9 || b.length > MAX_SPIFFE_ID) return false;
        bytes9 prefix = bytes9(b[0:9]);
        return prefix == bytes9("spiffe://") && b[9] != "/";
    }
}

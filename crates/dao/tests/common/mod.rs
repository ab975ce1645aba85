//! The contracts behind the same operations as the off-chain engine, for the contract tests
//! and the differential test.
#![allow(dead_code)]

use alloy_primitives::{keccak256, Address, FixedBytes, U256};
use alloy_sol_types::SolCall;
use x0tta6bl4_dao::engine::{Action, Rules, Tally};
use x0tta6bl4_dao::evm::{
    default_artifact_dir, Artifacts, Chain, Deployment, EvmError, IMeshGovernance as G,
    IMeshParameters as P, IOperatorRegistry as R,
};

pub const ADMIN: Address = Address::repeat_byte(0xad);

/// The compiled contracts, or a failure that says how to build them.
pub fn artifacts() -> Artifacts {
    match Artifacts::load(&default_artifact_dir()) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

fn reason(e: EvmError) -> String {
    match e.reason() {
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

pub struct OnChain {
    pub chain: Chain,
    pub d: Deployment,
}

pub fn u48(v: u64) -> alloy_primitives::aliases::U48 {
    alloy_primitives::aliases::U48::from(v)
}

impl OnChain {
    pub fn new(artifacts: &Artifacts, rules: &Rules, now: u64) -> Self {
        let mut chain = Chain::new();
        chain.set_time(now);
        let d = Deployment::deploy(&mut chain, artifacts, ADMIN, rules).expect("deploy");
        OnChain { chain, d }
    }

    pub fn at(&mut self, now: u64) {
        self.chain.set_time(now);
    }

    pub fn tx<C: SolCall>(
        &mut self,
        from: Address,
        to: Address,
        call: C,
    ) -> Result<C::Return, String> {
        self.chain
            .call(from, to, call)
            .map(|(r, _)| r)
            .map_err(reason)
    }

    pub fn gas<C: SolCall>(&mut self, from: Address, to: Address, call: C) -> u64 {
        match self.chain.call(from, to, call) {
            Ok((_, gas)) => gas,
            Err(e) => panic!("{}: {e}", C::SIGNATURE),
        }
    }

    pub fn view<C: SolCall>(&mut self, to: Address, call: C) -> Result<C::Return, String> {
        self.chain.view(to, call).map_err(reason)
    }

    pub fn admit(&mut self, from: Address, operator: Address) -> Result<(), String> {
        let r = self.d.registry;
        self.tx(from, r, R::admitCall { operator }).map(|_| ())
    }

    pub fn remove(&mut self, from: Address, operator: Address) -> Result<(), String> {
        let r = self.d.registry;
        self.tx(from, r, R::removeCall { operator }).map(|_| ())
    }

    pub fn delegate(&mut self, from: Address, to: Address) -> Result<(), String> {
        let r = self.d.registry;
        self.tx(from, r, R::delegateCall { to }).map(|_| ())
    }

    pub fn undelegate(&mut self, from: Address) -> Result<(), String> {
        let r = self.d.registry;
        self.tx(from, r, R::undelegateCall {}).map(|_| ())
    }

    pub fn propose(
        &mut self,
        from: Address,
        action: &Action,
        description: &str,
        addr_of: impl Fn(&str) -> Address,
    ) -> Result<u64, String> {
        let g = self.d.governance;
        let description = description.to_string();
        let id = match action {
            Action::ParameterChange { name, value } => self.tx(
                from,
                g,
                G::proposeParameterChangeCall {
                    name: name.clone(),
                    value: U256::from(*value),
                    description,
                },
            ),
            Action::NodeBan { spiffe_id, reason } => self.tx(
                from,
                g,
                G::proposeNodeBanCall {
                    spiffeId: spiffe_id.clone(),
                    reason: reason.clone(),
                    description,
                },
            ),
            Action::KeyRotation { spiffe_id } => self.tx(
                from,
                g,
                G::proposeKeyRotationCall {
                    spiffeId: spiffe_id.clone(),
                    description,
                },
            ),
            Action::PolicyChange { hash, uri } => self.tx(
                from,
                g,
                G::proposePolicyChangeCall {
                    policyHash: FixedBytes(*hash),
                    uri: uri.clone(),
                    description,
                },
            ),
            Action::AdmitOperator { operator } => self.tx(
                from,
                g,
                G::proposeAdmitOperatorCall {
                    operator: addr_of(operator),
                    description,
                },
            ),
        }?;
        Ok(id.to::<u64>())
    }

    pub fn vote(&mut self, from: Address, id: u64, support: u8, votes: u64) -> Result<u64, String> {
        let g = self.d.governance;
        self.tx(
            from,
            g,
            G::castVoteCall {
                proposalId: U256::from(id),
                support,
                votes: U256::from(votes),
            },
        )
        .map(|used| used.to::<u64>())
    }

    pub fn cancel(&mut self, from: Address, id: u64) -> Result<(), String> {
        let g = self.d.governance;
        self.tx(
            from,
            g,
            G::cancelCall {
                proposalId: U256::from(id),
            },
        )
        .map(|_| ())
    }

    pub fn queue(&mut self, id: u64) -> Result<u64, String> {
        let g = self.d.governance;
        self.tx(
            ADMIN,
            g,
            G::queueCall {
                proposalId: U256::from(id),
            },
        )
        .map(|eta| eta.to::<u64>())
    }

    pub fn execute(&mut self, id: u64) -> Result<(), String> {
        let g = self.d.governance;
        self.tx(
            ADMIN,
            g,
            G::executeCall {
                proposalId: U256::from(id),
            },
        )
        .map(|_| ())
    }

    pub fn state(&mut self, id: u64) -> Result<u8, String> {
        let g = self.d.governance;
        self.view(
            g,
            G::stateCall {
                proposalId: U256::from(id),
            },
        )
    }

    pub fn tally(&mut self, id: u64) -> Result<Tally, String> {
        let g = self.d.governance;
        let v = self.view(
            g,
            G::proposalVotesCall {
                proposalId: U256::from(id),
            },
        )?;
        Ok(Tally {
            against: v.againstVotes.to(),
            for_votes: v.forVotes.to(),
            abstain: v.abstainVotes.to(),
            represented: v.represented.to(),
            eligible: v.eligibleCount.to(),
        })
    }

    pub fn parameter(&mut self, name: &str) -> u64 {
        let p = self.d.parameters;
        let key = keccak256(name.as_bytes());
        self.view(p, P::getParameterCall { key })
            .expect("known parameter")
            .value
            .to()
    }

    pub fn banned(&mut self, spiffe_id: &str) -> bool {
        let p = self.d.parameters;
        let node_id = keccak256(spiffe_id.as_bytes());
        self.view(p, P::bannedCall { nodeId: node_id }).unwrap()
    }

    pub fn is_operator(&mut self, a: Address) -> bool {
        let r = self.d.registry;
        self.view(r, R::isOperatorCall { account: a }).unwrap()
    }

    pub fn delegate_of(&mut self, a: Address) -> Address {
        let r = self.d.registry;
        self.view(r, R::delegateOfCall { account: a }).unwrap()
    }

    pub fn operator_count(&mut self) -> u64 {
        let r = self.d.registry;
        self.view(r, R::operatorCountCall {}).unwrap().to()
    }
}

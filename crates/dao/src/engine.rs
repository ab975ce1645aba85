//! The off-chain governance engine: the same rules as the contracts in `contracts/src`, as a
//! sans-IO state machine. Time is an argument (seconds, like `block.timestamp`), nothing here
//! reads a clock, a file or the network.
//!
//! Every refusal carries the contracts' own revert reason ([`Refused`]), in the same order of
//! checks, so that the differential test can compare the engine with the EVM operation by
//! operation: same result, same reason, same tally, same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Voice credits of every operator per proposal (QuadraticVoting.VOICE_CREDITS).
pub const VOICE_CREDITS: u64 = 100;
/// Operators ever admitted (OperatorRegistry.MAX_OPERATORS).
pub const MAX_OPERATORS: usize = 256;
/// ProposalFactory's bounds on proposal arguments.
pub const MAX_DESCRIPTION: usize = 10_000;
pub const MAX_REASON: usize = 280;
pub const MAX_URI: usize = 256;
pub const MAX_SPIFFE_ID: usize = 2048;

/// A refusal, with the revert reason the contracts give for the same operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

type Result<T> = std::result::Result<T, Refused>;

/// The governance timing and quorum (MeshGovernance's constructor arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Seconds from proposal to snapshot; voting opens right after the snapshot.
    pub voting_delay: u64,
    /// Seconds the vote stays open after the snapshot.
    pub voting_period: u64,
    /// Seconds between queueing a successful proposal and its earliest execution (eta).
    pub timelock_delay: u64,
    /// Seconds after the eta during which the proposal can still be executed.
    pub grace_period: u64,
    /// Quorum: percentage of the operators registered at the snapshot whose voting power
    /// must be cast, directly or through delegation.
    pub quorum_percent: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            voting_delay: 3_600,
            voting_period: 3 * 86_400,
            timelock_delay: 86_400,
            grace_period: 7 * 86_400,
            quorum_percent: 20,
        }
    }
}

impl Rules {
    /// The constructor's checks.
    pub fn validate(&self) -> Result<()> {
        if self.voting_period == 0 {
            return Err(Refused("governance: zero voting period"));
        }
        if self.grace_period == 0 {
            return Err(Refused("governance: zero grace period"));
        }
        if self.quorum_percent == 0 || self.quorum_percent > 100 {
            return Err(Refused("governance: quorum out of range"));
        }
        Ok(())
    }
}

/// The Governor's proposal states, numbered as in MeshGovernance.ProposalState.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalState {
    Pending = 0,
    Active = 1,
    Canceled = 2,
    Defeated = 3,
    Succeeded = 4,
    Queued = 5,
    Expired = 6,
    Executed = 7,
}

impl ProposalState {
    pub fn from_u8(value: u8) -> Option<Self> {
        use ProposalState::*;
        [
            Pending, Active, Canceled, Defeated, Succeeded, Queued, Expired, Executed,
        ]
        .get(value as usize)
        .copied()
    }
}

/// A vote's direction, numbered as in the Governor: 0 against, 1 for, 2 abstain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Support {
    Against = 0,
    For = 1,
    Abstain = 2,
}

impl Support {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "against" | "0" => Some(Support::Against),
            "for" | "1" => Some(Support::For),
            "abstain" | "2" => Some(Support::Abstain),
            _ => None,
        }
    }
}

/// What a proposal does when executed: one of ProposalFactory's templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Action {
    /// Set a governed parameter (a node configuration key, e.g. `protocol.probe_interval_ms`).
    ParameterChange { name: String, value: u64 },
    /// Ban a node: its SVIDs are to be revoked by the CA.
    NodeBan { spiffe_id: String, reason: String },
    /// Order the rotation of a node's key (an empty `spiffe_id`: every key in the domain).
    KeyRotation { spiffe_id: String },
    /// Replace the admission policy with the one whose SHA-256 is `hash`, found at `uri`.
    PolicyChange { hash: [u8; 32], uri: String },
    /// Admit a new operator.
    AdmitOperator { operator: String },
}

/// What an executed proposal changed, for the running mesh to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    ParameterChanged { name: String, old: u64, new: u64 },
    NodeBanned { spiffe_id: String, reason: String },
    KeyRotationOrdered { spiffe_id: String, at: u64 },
    PolicyChanged { hash: [u8; 32], uri: String },
    OperatorAdmitted { operator: String },
}

/// A governed parameter with its bounds (MeshParameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

/// The mesh's governed state (MeshParameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshParameters {
    pub parameters: Vec<Parameter>,
    pub banned: BTreeSet<String>,
    /// SPIFFE ID ("" for the whole domain) => time of the rotation order.
    pub key_rotated_at: BTreeMap<String, u64>,
    pub policy: Option<([u8; 32], String)>,
}

impl Default for MeshParameters {
    fn default() -> Self {
        let p = |name: &str, value, min, max| Parameter {
            name: name.to_string(),
            value,
            min,
            max,
        };
        MeshParameters {
            parameters: vec![
                p("protocol.probe_interval_ms", 50, 10, 10_000),
                p("protocol.spf_delay_ms", 5, 0, 1_000),
                p("protocol.flood_retransmit_ms", 100, 10, 10_000),
                p("protocol.lsa_refresh_ms", 30_000, 1_000, 600_000),
                p("protocol.cost_update_interval_ms", 1_000, 100, 60_000),
                p("protocol.beacon_interval_ms", 250, 50, 60_000),
            ],
            banned: BTreeSet::new(),
            key_rotated_at: BTreeMap::new(),
            policy: None,
        }
    }
}

impl MeshParameters {
    pub fn get(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

/// A value history keyed by time (OpenZeppelin's Checkpoints: a push at the same time
/// replaces the last value; a lookup at t sees the last value pushed at or before t).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints<T>(Vec<(u64, T)>);

impl<T: Copy + Default> Checkpoints<T> {
    pub fn push(&mut self, time: u64, value: T) {
        match self.0.last_mut() {
            Some(last) if last.0 == time => last.1 = value,
            _ => self.0.push((time, value)),
        }
    }

    pub fn latest(&self) -> T {
        self.0.last().map(|c| c.1).unwrap_or_default()
    }

    pub fn at(&self, time: u64) -> T {
        let n = self.0.partition_point(|c| c.0 <= time);
        if n == 0 {
            T::default()
        } else {
            self.0[n - 1].1
        }
    }
}

/// An operator ever admitted, with its membership and delegation histories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub id: String,
    member: Checkpoints<bool>,
    /// 1 + index of the delegate (0: none), as in the registry's snapshot().
    delegate: Checkpoints<usize>,
}

/// A proposal and its ballots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub proposer: String,
    pub action: Action,
    pub description: String,
    pub vote_start: u64,
    pub vote_end: u64,
    /// 0 until queued.
    pub eta: u64,
    pub canceled: bool,
    pub executed: bool,
    /// Operator index => votes [against, for, abstain] cast directly.
    ballots: BTreeMap<usize, [u64; 3]>,
}

/// A proposal's tally with liquid delegation at its snapshot (MeshGovernance.proposalVotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tally {
    pub against: u64,
    pub for_votes: u64,
    pub abstain: u64,
    /// Operators whose voting power was cast, directly or through delegation.
    pub represented: u64,
    /// Operators registered at the snapshot.
    pub eligible: u64,
}

/// The governance state: registry, delegation, proposals, ballots and the governed
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    pub rules: Rules,
    registrars: BTreeSet<String>,
    operators: Vec<Operator>,
    #[serde(skip)]
    index: HashMap<String, usize>,
    count: Checkpoints<u64>,
    proposals: Vec<Proposal>,
    pub mesh: MeshParameters,
}

impl Engine {
    /// A new governance whose first registrar is `admin` (the deployer, on chain).
    pub fn new(rules: Rules, admin: &str) -> Result<Self> {
        rules.validate()?;
        Ok(Engine {
            rules,
            registrars: BTreeSet::from([admin.to_string()]),
            operators: Vec::new(),
            index: HashMap::new(),
            count: Checkpoints::default(),
            proposals: Vec::new(),
            mesh: MeshParameters::default(),
        })
    }

    /// Rebuilds the lookup index after deserialisation.
    pub fn reindex(&mut self) {
        self.index = self
            .operators
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.clone(), i))
            .collect();
    }

    pub fn is_operator(&self, id: &str) -> bool {
        self.index
            .get(id)
            .is_some_and(|&i| self.operators[i].member.latest())
    }

    /// Whether `id` was a registered operator at `time` (a proposal's snapshot).
    pub fn was_operator_at(&self, id: &str, time: u64) -> bool {
        self.index
            .get(id)
            .is_some_and(|&i| self.operators[i].member.at(time))
    }

    pub fn operator_count(&self) -> u64 {
        self.count.latest()
    }

    /// Operators ever admitted, in admission order.
    pub fn operators(&self) -> impl Iterator<Item = &str> {
        self.operators.iter().map(|o| o.id.as_str())
    }

    pub fn delegate_of(&self, id: &str) -> Option<&str> {
        let i = *self.index.get(id)?;
        match self.operators[i].delegate.latest() {
            0 => None,
            d => Some(&self.operators[d - 1].id),
        }
    }

    pub fn proposals(&self) -> &[Proposal] {
        &self.proposals
    }

    pub fn proposal(&self, id: u64) -> Result<&Proposal> {
        if id == 0 || id as usize > self.proposals.len() {
            return Err(Refused("governance: unknown proposal"));
        }
        Ok(&self.proposals[id as usize - 1])
    }

    fn proposal_mut(&mut self, id: u64) -> &mut Proposal {
        &mut self.proposals[id as usize - 1]
    }

    // ---- OperatorRegistry ----------------------------------------------------------

    pub fn grant_registrar(&mut self, id: &str) {
        self.registrars.insert(id.to_string());
    }

    pub fn admit(&mut self, caller: &str, operator: &str, now: u64) -> Result<()> {
        if !self.registrars.contains(caller) {
            return Err(Refused("registry: caller is not a registrar"));
        }
        self.admit_unchecked(operator, now)
    }

    fn admit_unchecked(&mut self, operator: &str, now: u64) -> Result<()> {
        if operator.is_empty() {
            return Err(Refused("registry: zero address"));
        }
        if self.is_operator(operator) {
            return Err(Refused("registry: already an operator"));
        }
        let i = match self.index.get(operator) {
            Some(&i) => i,
            None => {
                if self.operators.len() >= MAX_OPERATORS {
                    return Err(Refused("registry: registry is full"));
                }
                self.operators.push(Operator {
                    id: operator.to_string(),
                    member: Checkpoints::default(),
                    delegate: Checkpoints::default(),
                });
                self.index
                    .insert(operator.to_string(), self.operators.len() - 1);
                self.operators.len() - 1
            }
        };
        self.operators[i].member.push(now, true);
        self.count.push(now, self.count.latest() + 1);
        Ok(())
    }

    pub fn remove(&mut self, caller: &str, operator: &str, now: u64) -> Result<()> {
        if !self.registrars.contains(caller) {
            return Err(Refused("registry: caller is not a registrar"));
        }
        if !self.is_operator(operator) {
            return Err(Refused("registry: not an operator"));
        }
        let i = self.index[operator];
        self.operators[i].member.push(now, false);
        self.count.push(now, self.count.latest() - 1);
        if self.operators[i].delegate.latest() != 0 {
            self.operators[i].delegate.push(now, 0);
        }
        Ok(())
    }

    /// Liquid delegation: refused when it would close a cycle.
    pub fn delegate(&mut self, caller: &str, to: &str, now: u64) -> Result<()> {
        if !self.is_operator(caller) {
            return Err(Refused("registry: not an operator"));
        }
        if to == caller {
            return Err(Refused("registry: self delegation"));
        }
        if !self.is_operator(to) {
            return Err(Refused("registry: delegate is not an operator"));
        }
        let me = self.index[caller];
        let mut cur = self.index[to] + 1;
        while cur != 0 {
            if cur - 1 == me {
                return Err(Refused("registry: delegation cycle"));
            }
            cur = self.operators[cur - 1].delegate.latest();
        }
        let target = self.index[to] + 1;
        self.operators[me].delegate.push(now, target);
        Ok(())
    }

    pub fn undelegate(&mut self, caller: &str, now: u64) -> Result<()> {
        if !self.is_operator(caller) {
            return Err(Refused("registry: not an operator"));
        }
        let me = self.index[caller];
        if self.operators[me].delegate.latest() == 0 {
            return Err(Refused("registry: no delegation"));
        }
        self.operators[me].delegate.push(now, 0);
        Ok(())
    }

    // ---- ProposalFactory -------------------------------------------------------------

    fn validate_action(&self, action: &Action) -> Result<()> {
        match action {
            Action::ParameterChange { name, value } => {
                let p = self
                    .mesh
                    .get(name)
                    .ok_or(Refused("factory: unknown parameter"))?;
                if *value < p.min || *value > p.max {
                    return Err(Refused("factory: value out of bounds"));
                }
            }
            Action::NodeBan { spiffe_id, reason } => {
                if !is_spiffe_id(spiffe_id) {
                    return Err(Refused("factory: malformed SPIFFE ID"));
                }
                if reason.is_empty() {
                    return Err(Refused("factory: empty reason"));
                }
                if reason.len() > MAX_REASON {
                    return Err(Refused("factory: reason too long"));
                }
                if self.mesh.banned.contains(spiffe_id) {
                    return Err(Refused("factory: node already banned"));
                }
            }
            Action::KeyRotation { spiffe_id } => {
                if !spiffe_id.is_empty() {
                    if !is_spiffe_id(spiffe_id) {
                        return Err(Refused("factory: malformed SPIFFE ID"));
                    }
                    if self.mesh.banned.contains(spiffe_id) {
                        return Err(Refused("factory: node is banned"));
                    }
                }
            }
            Action::PolicyChange { hash, uri } => {
                if *hash == [0; 32] {
                    return Err(Refused("factory: zero policy hash"));
                }
                if uri.is_empty() || uri.len() > MAX_URI {
                    return Err(Refused("factory: malformed policy URI"));
                }
            }
            Action::AdmitOperator { operator } => {
                if operator.is_empty() {
                    return Err(Refused("factory: zero address"));
                }
                if self.is_operator(operator) {
                    return Err(Refused("factory: already an operator"));
                }
            }
        }
        Ok(())
    }

    // ---- MeshGovernance --------------------------------------------------------------

    /// A new proposal from a template; returns its id (1, 2, ...).
    pub fn propose(
        &mut self,
        caller: &str,
        action: Action,
        description: &str,
        now: u64,
    ) -> Result<u64> {
        self.validate_action(&action)?;
        if !self.is_operator(caller) {
            return Err(Refused("governance: proposer is not an operator"));
        }
        if description.is_empty() {
            return Err(Refused("factory: empty description"));
        }
        if description.len() > MAX_DESCRIPTION {
            return Err(Refused("factory: description too long"));
        }
        let id = self.proposals.len() as u64 + 1;
        let vote_start = now + self.rules.voting_delay;
        self.proposals.push(Proposal {
            id,
            proposer: caller.to_string(),
            action,
            description: description.to_string(),
            vote_start,
            vote_end: vote_start + self.rules.voting_period,
            eta: 0,
            canceled: false,
            executed: false,
            ballots: BTreeMap::new(),
        });
        Ok(id)
    }

    pub fn state(&self, id: u64, now: u64) -> Result<ProposalState> {
        let p = self.proposal(id)?;
        if p.executed {
            return Ok(ProposalState::Executed);
        }
        if p.canceled {
            return Ok(ProposalState::Canceled);
        }
        if now <= p.vote_start {
            return Ok(ProposalState::Pending);
        }
        if now <= p.vote_end {
            return Ok(ProposalState::Active);
        }
        let t = self.tally(id)?;
        if !self.quorum_reached(&t) || t.for_votes <= t.against {
            return Ok(ProposalState::Defeated);
        }
        if p.eta == 0 {
            return Ok(ProposalState::Succeeded);
        }
        if now > p.eta + self.rules.grace_period {
            return Ok(ProposalState::Expired);
        }
        Ok(ProposalState::Queued)
    }

    pub fn quorum_reached(&self, t: &Tally) -> bool {
        t.represented * 100 >= self.rules.quorum_percent * t.eligible
    }

    /// Operators needed for the quorum of a proposal.
    pub fn quorum(&self, id: u64) -> Result<u64> {
        let p = self.proposal(id)?;
        Ok((self.rules.quorum_percent * self.count.at(p.vote_start)).div_ceil(100))
    }

    /// For each operator (admission order), the index of the operator whose ballot casts
    /// its power at the proposal's snapshot: itself if it voted, else the first operator
    /// along its delegation chain who voted; None when the chain meets a non-member or ends
    /// without a voter.
    pub fn resolve(&self, id: u64) -> Result<Vec<Option<usize>>> {
        let p = self.proposal(id)?;
        let t = p.vote_start;
        let n = self.operators.len();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut cur = i;
            let mut steps = 0;
            let voter = loop {
                let op = &self.operators[cur];
                if !op.member.at(t) {
                    break None;
                }
                if p.ballots.contains_key(&cur) {
                    break Some(cur);
                }
                steps += 1;
                match op.delegate.at(t) {
                    0 => break None,
                    _ if steps == n => break None,
                    d => cur = d - 1,
                }
            };
            out.push(if self.operators[i].member.at(t) {
                voter
            } else {
                None
            });
        }
        Ok(out)
    }

    pub fn tally(&self, id: u64) -> Result<Tally> {
        let p = self.proposal(id)?;
        let mut t = Tally {
            eligible: self.count.at(p.vote_start),
            ..Tally::default()
        };
        for voter in self.resolve(id)?.into_iter().flatten() {
            let b = p.ballots[&voter];
            t.against += b[0];
            t.for_votes += b[1];
            t.abstain += b[2];
            t.represented += 1;
        }
        Ok(t)
    }

    /// The voter's own ballot [against, for, abstain].
    pub fn ballot_of(&self, id: u64, voter: &str) -> Result<[u64; 3]> {
        let p = self.proposal(id)?;
        Ok(self
            .index
            .get(voter)
            .and_then(|i| p.ballots.get(i))
            .copied()
            .unwrap_or_default())
    }

    /// Casts `votes` more votes of one kind (0 against, 1 for, 2 abstain) at quadratic cost;
    /// returns the credits the whole ballot uses.
    pub fn cast_vote(
        &mut self,
        caller: &str,
        id: u64,
        support: u8,
        votes: u64,
        now: u64,
    ) -> Result<u64> {
        if self.state(id, now)? != ProposalState::Active {
            return Err(Refused("governance: vote outside the voting window"));
        }
        let vote_start = self.proposal(id)?.vote_start;
        let voter = match self.index.get(caller) {
            Some(&i) if self.operators[i].member.at(vote_start) => i,
            _ => return Err(Refused("governance: not an operator at the snapshot")),
        };
        if support > 2 {
            return Err(Refused("qv: invalid vote type"));
        }
        if votes == 0 {
            return Err(Refused("qv: zero votes"));
        }
        if votes > VOICE_CREDITS {
            return Err(Refused("qv: insufficient voice credits"));
        }
        let mut ballot = self
            .proposal(id)?
            .ballots
            .get(&voter)
            .copied()
            .unwrap_or_default();
        ballot[support as usize] += votes;
        let used = quadratic_cost(&ballot);
        if used > VOICE_CREDITS {
            return Err(Refused("qv: insufficient voice credits"));
        }
        self.proposal_mut(id).ballots.insert(voter, ballot);
        Ok(used)
    }

    pub fn cancel(&mut self, caller: &str, id: u64, now: u64) -> Result<()> {
        let state = self.state(id, now)?;
        if self.proposal(id)?.proposer != caller {
            return Err(Refused("governance: only the proposer can cancel"));
        }
        if state != ProposalState::Pending {
            return Err(Refused("governance: proposal not pending"));
        }
        self.proposal_mut(id).canceled = true;
        Ok(())
    }

    /// Queues a successful proposal behind the timelock; returns its eta.
    pub fn queue(&mut self, id: u64, now: u64) -> Result<u64> {
        if self.state(id, now)? != ProposalState::Succeeded {
            return Err(Refused("governance: proposal not successful"));
        }
        let eta = now + self.rules.timelock_delay;
        self.proposal_mut(id).eta = eta;
        Ok(eta)
    }

    /// Executes a queued proposal whose timelock has elapsed; returns what changed.
    pub fn execute(&mut self, id: u64, now: u64) -> Result<Effect> {
        if self.state(id, now)? != ProposalState::Queued {
            return Err(Refused("governance: proposal not queued"));
        }
        if now < self.proposal(id)?.eta {
            return Err(Refused("governance: timelock not elapsed"));
        }
        let action = self.proposal(id)?.action.clone();
        // The call into MeshParameters or the registry; on a revert nothing changes.
        let effect = match action {
            Action::ParameterChange { name, value } => {
                let p = self
                    .mesh
                    .parameters
                    .iter_mut()
                    .find(|p| p.name == name)
                    .ok_or(Refused("parameters: unknown parameter"))?;
                if value < p.min || value > p.max {
                    return Err(Refused("parameters: value out of bounds"));
                }
                let old = std::mem::replace(&mut p.value, value);
                Effect::ParameterChanged {
                    name,
                    old,
                    new: value,
                }
            }
            Action::NodeBan { spiffe_id, reason } => {
                if !self.mesh.banned.insert(spiffe_id.clone()) {
                    return Err(Refused("parameters: node already banned"));
                }
                Effect::NodeBanned { spiffe_id, reason }
            }
            Action::KeyRotation { spiffe_id } => {
                if self.mesh.banned.contains(&spiffe_id) {
                    return Err(Refused("parameters: node is banned"));
                }
                self.mesh.key_rotated_at.insert(spiffe_id.clone(), now);
                Effect::KeyRotationOrdered { spiffe_id, at: now }
            }
            Action::PolicyChange { hash, uri } => {
                self.mesh.policy = Some((hash, uri.clone()));
                Effect::PolicyChanged { hash, uri }
            }
            Action::AdmitOperator { operator } => {
                self.admit_unchecked(&operator, now)?;
                Effect::OperatorAdmitted { operator }
            }
        };
        self.proposal_mut(id).executed = true;
        Ok(effect)
    }
}

/// a² + f² + s² voice credits for a ballot of a against, f for and s abstain votes.
pub fn quadratic_cost(ballot: &[u64; 3]) -> u64 {
    ballot.iter().map(|v| v * v).sum()
}

/// ProposalFactory's check: `spiffe://`, a non-empty trust domain, at most 2048 bytes.
pub fn is_spiffe_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() > 9 && b.len() <= MAX_SPIFFE_ID && b.starts_with(b"spiffe://") && b[9] != b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin";

    fn engine(n: usize) -> Engine {
        let rules = Rules {
            voting_delay: 10,
            voting_period: 100,
            timelock_delay: 50,
            grace_period: 200,
            quorum_percent: 50,
        };
        let mut e = Engine::new(rules, ADMIN).unwrap();
        for i in 0..n {
            e.admit(ADMIN, &format!("op{i}"), 1).unwrap();
        }
        e
    }

    fn ban(id: &str) -> Action {
        Action::NodeBan {
            spiffe_id: format!("spiffe://mesh.test/node/{id}"),
            reason: "misbehaves".into(),
        }
    }

    #[test]
    fn lifecycle_to_execution() {
        let mut e = engine(4);
        let id = e.propose("op0", ban("n1"), "ban n1", 100).unwrap();
        assert_eq!(e.state(id, 110).unwrap(), ProposalState::Pending);
        assert_eq!(e.state(id, 111).unwrap(), ProposalState::Active);
        assert_eq!(e.cast_vote("op0", id, 1, 3, 111).unwrap(), 9);
        assert_eq!(e.cast_vote("op1", id, 1, 2, 150).unwrap(), 4);
        assert_eq!(e.state(id, 210).unwrap(), ProposalState::Active);
        assert_eq!(e.state(id, 211).unwrap(), ProposalState::Succeeded);
        assert_eq!(
            e.execute(id, 211),
            Err(Refused("governance: proposal not queued"))
        );
        assert_eq!(e.queue(id, 220).unwrap(), 270);
        assert_eq!(e.state(id, 221).unwrap(), ProposalState::Queued);
        assert_eq!(
            e.execute(id, 269),
            Err(Refused("governance: timelock not elapsed"))
        );
        let effect = e.execute(id, 270).unwrap();
        assert!(matches!(effect, Effect::NodeBanned { .. }));
        assert_eq!(e.state(id, 271).unwrap(), ProposalState::Executed);
        assert!(e.mesh.banned.contains("spiffe://mesh.test/node/n1"));
    }

    #[test]
    fn expiry_after_grace() {
        let mut e = engine(2);
        let id = e.propose("op0", ban("n1"), "ban", 0).unwrap();
        e.cast_vote("op0", id, 1, 1, 11).unwrap();
        e.queue(id, 111).unwrap();
        assert_eq!(e.state(id, 111 + 50 + 200).unwrap(), ProposalState::Queued);
        assert_eq!(e.state(id, 111 + 50 + 201).unwrap(), ProposalState::Expired);
        assert_eq!(
            e.execute(id, 400),
            Err(Refused("governance: proposal not queued"))
        );
    }

    #[test]
    fn quadratic_credits() {
        let mut e = engine(2);
        let id = e.propose("op0", ban("n1"), "ban", 0).unwrap();
        assert_eq!(e.cast_vote("op0", id, 1, 10, 11).unwrap(), 100);
        assert_eq!(
            e.cast_vote("op0", id, 0, 1, 11),
            Err(Refused("qv: insufficient voice credits"))
        );
        assert_eq!(
            e.cast_vote("op1", id, 1, 11, 11),
            Err(Refused("qv: insufficient voice credits"))
        );
        assert_eq!(e.cast_vote("op1", id, 2, 6, 11).unwrap(), 36);
        assert_eq!(e.cast_vote("op1", id, 0, 8, 11).unwrap(), 100);
        assert_eq!(
            e.cast_vote("op1", id, 3, 1, 11),
            Err(Refused("qv: invalid vote type"))
        );
        assert_eq!(
            e.cast_vote("op1", id, 1, 0, 11),
            Err(Refused("qv: zero votes"))
        );
        let t = e.tally(id).unwrap();
        assert_eq!(
            (t.against, t.for_votes, t.abstain, t.represented),
            (8, 10, 6, 2)
        );
    }

    #[test]
    fn delegation_chain_cycle_and_override() {
        let mut e = engine(4);
        e.delegate("op0", "op1", 2).unwrap();
        e.delegate("op1", "op2", 2).unwrap();
        assert_eq!(
            e.delegate("op2", "op0", 2),
            Err(Refused("registry: delegation cycle"))
        );
        assert_eq!(
            e.delegate("op2", "op2", 2),
            Err(Refused("registry: self delegation"))
        );
        let id = e.propose("op3", ban("n1"), "ban", 5).unwrap();
        e.cast_vote("op2", id, 1, 5, 16).unwrap();
        let t = e.tally(id).unwrap();
        assert_eq!((t.for_votes, t.represented), (15, 3));
        // a direct vote overrides the delegation for this proposal
        e.cast_vote("op0", id, 0, 2, 17).unwrap();
        let t = e.tally(id).unwrap();
        assert_eq!((t.against, t.for_votes, t.represented), (2, 10, 3));
        // delegation after the snapshot does not count
        e.delegate("op3", "op2", 20).unwrap();
        assert_eq!(e.tally(id).unwrap().represented, 3);
    }

    #[test]
    fn refusals_leave_no_trace() {
        let mut e = engine(2);
        let before = e.clone();
        assert_eq!(
            e.propose(
                "op0",
                Action::ParameterChange {
                    name: "protocol.probe_interval_ms".into(),
                    value: 5
                },
                "x",
                0
            ),
            Err(Refused("factory: value out of bounds"))
        );
        assert_eq!(
            e.propose("nobody", ban("n"), "x", 0),
            Err(Refused("governance: proposer is not an operator"))
        );
        assert_eq!(
            e.propose(
                "op0",
                Action::NodeBan {
                    spiffe_id: "spiffe:///x".into(),
                    reason: "r".into()
                },
                "x",
                0
            ),
            Err(Refused("factory: malformed SPIFFE ID"))
        );
        assert_eq!(
            e.admit("op0", "op9", 0),
            Err(Refused("registry: caller is not a registrar"))
        );
        assert_eq!(e, before);
    }
}

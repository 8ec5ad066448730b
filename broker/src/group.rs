//! The consumer-group coordinator (Kafka's classic protocol: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), kept in memory: a restarted broker has no members, and
//! its clients find that out at their next heartbeat and join again. Committed
//! offsets are not kept here but on disk ([`crate::offsets`]).
//!
//! What makes it survive members that die at any moment — the case the combined
//! fault run exercises:
//! - A join completes when every known member has sent its JoinGroup (a join
//!   barrier), or at the rebalance deadline, when the members that did not rejoin are
//!   removed. Every completed join starts a new generation.
//! - A member waiting inside JoinGroup or SyncGroup is alive while its connection is;
//!   a member whose connection closed while it waited is removed at once (it was
//!   killed), and one that neither waits nor heartbeats within its session timeout
//!   is removed too. Removing a member restarts the rebalance, which answers the
//!   members waiting in SyncGroup with `REBALANCE_IN_PROGRESS` so they rejoin — a
//!   group whose leader died before assigning is never stuck.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// Session timeouts outside this range are refused (`INVALID_SESSION_TIMEOUT`), as
/// Kafka's `group.min/max.session.timeout.ms` do.
pub const MIN_SESSION: Duration = Duration::from_secs(1);
pub const MAX_SESSION: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub client_id: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// Assignment strategies with their subscription metadata, preferred first.
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synced {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

/// One group's members as DescribeGroups shows them.
#[derive(Debug, Clone)]
pub struct Description {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, client id, metadata, assignment)
    pub members: Vec<(String, String, Bytes, Bytes)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Preparing,
    Completing,
    Stable,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    seq: u64,
    last_seen: Instant,
    joining: Option<oneshot::Sender<Joined>>,
    syncing: Option<oneshot::Sender<Synced>>,
    assignment: Bytes,
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    next_seq: u64,
    deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            next_seq: 0,
            deadline: None,
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::Completing {
            for member in self.members.values_mut() {
                if let Some(tx) = member.syncing.take() {
                    let _ = tx.send(Synced {
                        error: Some(ResponseError::RebalanceInProgress),
                        ..Synced::default()
                    });
                }
            }
        }
        if self.state != State::Preparing {
            let longest = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.deadline = Some(now + longest);
            self.state = State::Preparing;
        }
    }

    fn try_complete_join(&mut self, now: Instant) {
        if self.state != State::Preparing {
            return;
        }
        let all_in = self.members.values().all(|m| m.joining.is_some());
        let late = self.deadline.is_some_and(|d| now >= d);
        if all_in || late {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        let missing: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.joining.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            tracing::info!(member = %id, "removed from its group: did not rejoin in time");
            self.members.remove(&id);
        }
        self.generation += 1;
        self.deadline = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        let protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.seq)
                .map(|(id, _)| id.clone());
        }
        let leader = self.leader.clone().unwrap_or_default();
        let mut ordered: Vec<(&String, &Member)> = self.members.iter().collect();
        ordered.sort_by_key(|(_, m)| m.seq);
        let roster: Vec<(String, Bytes)> = ordered
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                ((*id).clone(), metadata)
            })
            .collect();
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        self.protocol = Some(protocol.clone());
        let mut gone = Vec::new();
        for (id, member) in self.members.iter_mut() {
            member.last_seen = now;
            member.assignment = Bytes::new();
            let Some(tx) = member.joining.take() else {
                continue;
            };
            let joined = Joined {
                error: None,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: Some(protocol.clone()),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    roster.clone()
                } else {
                    Vec::new()
                },
            };
            if tx.send(joined).is_err() {
                gone.push(id.clone());
            }
        }
        self.state = State::Completing;
        tracing::info!(
            generation = self.generation, members = self.members.len(), %leader, %protocol,
            "group rebalanced"
        );
        for id in gone {
            tracing::info!(member = %id, "its connection closed while it joined; removing it");
            self.remove(&id, now);
        }
    }

    /// The protocol every member supports that most members prefer (ties: the
    /// oldest member's preference).
    fn select_protocol(&self) -> String {
        let mut ordered: Vec<&Member> = self.members.values().collect();
        ordered.sort_by_key(|m| m.seq);
        let supported_by_all = |name: &str| {
            ordered
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        };
        let candidates: Vec<&str> = ordered[0]
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| supported_by_all(n))
            .collect();
        let mut best = (0usize, candidates.first().copied().unwrap_or_default());
        for candidate in &candidates {
            let votes = ordered
                .iter()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .find(|n| candidates.contains(n))
                        == Some(*candidate)
                })
                .count();
            if votes > best.0 {
                best = (votes, candidate);
            }
        }
        best.1.to_string()
    }

    fn remove(&mut self, id: &str, now: Instant) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        drop(member);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            if self.state == State::Preparing {
                self.complete_join(now);
            } else {
                self.state = State::Empty;
                self.generation += 1;
                self.protocol = None;
                self.protocol_type = None;
            }
            return;
        }
        self.prepare_rebalance(now);
        self.try_complete_join(now);
    }
}

/// All groups of the broker.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: std::sync::Mutex<BTreeMap<String, Group>>,
}

impl Coordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// JoinGroup: the answer comes when the join completes.
    pub fn join(
        &self,
        group_id: &str,
        req: JoinRequest,
        now: Instant,
    ) -> oneshot::Receiver<Joined> {
        let (tx, rx) = oneshot::channel();
        let refuse = |tx: oneshot::Sender<Joined>, e: ResponseError, member_id: String| {
            let _ = tx.send(Joined {
                error: Some(e),
                generation: -1,
                member_id,
                ..Joined::default()
            });
        };
        if group_id.is_empty() {
            refuse(tx, ResponseError::InvalidGroupId, req.member_id);
            return rx;
        }
        if !(MIN_SESSION..=MAX_SESSION).contains(&req.session_timeout) {
            refuse(tx, ResponseError::InvalidSessionTimeout, req.member_id);
            return rx;
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            refuse(tx, ResponseError::InconsistentGroupProtocol, req.member_id);
            return rx;
        }
        let mut groups = self.lock();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        if !group.members.is_empty() {
            let same_type = group
                .members
                .values()
                .all(|m| m.protocol_type == req.protocol_type);
            let shared = req.protocols.iter().any(|(name, _)| {
                group
                    .members
                    .iter()
                    .filter(|(id, _)| **id != req.member_id)
                    .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
            });
            if !same_type || !shared {
                refuse(tx, ResponseError::InconsistentGroupProtocol, req.member_id);
                return rx;
            }
        }
        let member_id = if req.member_id.is_empty() {
            format!("{}-{}", req.client_id, uuid::Uuid::new_v4())
        } else if group.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else {
            refuse(tx, ResponseError::UnknownMemberId, req.member_id);
            return rx;
        };
        let seq = group.next_seq;
        group.next_seq += 1;
        let member = group.members.entry(member_id.clone()).or_insert(Member {
            client_id: req.client_id.clone(),
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocol_type: req.protocol_type.clone(),
            protocols: Vec::new(),
            seq,
            last_seen: now,
            joining: None,
            syncing: None,
            assignment: Bytes::new(),
        });
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols;
        member.last_seen = now;
        if let Some(old) = member.joining.replace(tx) {
            let _ = old.send(Joined {
                error: Some(ResponseError::RebalanceInProgress),
                generation: -1,
                member_id: member_id.clone(),
                ..Joined::default()
            });
        }
        if let Some(old) = member.syncing.take() {
            let _ = old.send(Synced {
                error: Some(ResponseError::RebalanceInProgress),
                ..Synced::default()
            });
        }
        group.prepare_rebalance(now);
        group.try_complete_join(now);
        rx
    }

    /// SyncGroup: the leader's call hands out the assignments; the others wait for it.
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> oneshot::Receiver<Synced> {
        let (tx, rx) = oneshot::channel();
        let refuse = |tx: oneshot::Sender<Synced>, e: ResponseError| {
            let _ = tx.send(Synced {
                error: Some(e),
                ..Synced::default()
            });
        };
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            refuse(tx, ResponseError::UnknownMemberId);
            return rx;
        };
        if !group.members.contains_key(member_id) {
            refuse(tx, ResponseError::UnknownMemberId);
            return rx;
        }
        if generation != group.generation {
            refuse(tx, ResponseError::IllegalGeneration);
            return rx;
        }
        let reply = |g: &Group, assignment: Bytes| Synced {
            error: None,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment,
        };
        match group.state {
            State::Empty | State::Preparing => refuse(tx, ResponseError::RebalanceInProgress),
            State::Stable => {
                let assignment = group.members[member_id].assignment.clone();
                let _ = tx.send(reply(group, assignment));
            }
            State::Completing => {
                if group.leader.as_deref() == Some(member_id) {
                    let mut assigned: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    let ids: Vec<String> = group.members.keys().cloned().collect();
                    let mut waiting = Vec::new();
                    for id in ids {
                        let assignment = assigned.remove(&id).unwrap_or_default();
                        let member = group.members.get_mut(&id).expect("listed above");
                        member.assignment = assignment.clone();
                        member.last_seen = now;
                        if let Some(w) = member.syncing.take() {
                            waiting.push((w, assignment));
                        }
                    }
                    group.state = State::Stable;
                    for (w, assignment) in waiting {
                        let _ = w.send(reply(group, assignment));
                    }
                    let assignment = group.members[member_id].assignment.clone();
                    let _ = tx.send(reply(group, assignment));
                } else {
                    let member = group.members.get_mut(member_id).expect("checked above");
                    member.last_seen = now;
                    if let Some(old) = member.syncing.replace(tx) {
                        refuse(old, ResponseError::RebalanceInProgress);
                    }
                }
            }
        }
        rx
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let Some(member) = groups
            .get_mut(group_id)
            .and_then(|g| g.members.get_mut(member_id))
        else {
            return Some(ResponseError::UnknownMemberId);
        };
        member.last_seen = now;
        let group = &groups[group_id];
        match group.state {
            State::Empty => Some(ResponseError::UnknownMemberId),
            State::Preparing => Some(ResponseError::RebalanceInProgress),
            _ if generation != group.generation => Some(ResponseError::IllegalGeneration),
            _ => None,
        }
    }

    /// LeaveGroup: each member's own result.
    pub fn leave(
        &self,
        group_id: &str,
        member_ids: &[String],
        now: Instant,
    ) -> Vec<Option<ResponseError>> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![Some(ResponseError::UnknownMemberId); member_ids.len()];
        };
        member_ids
            .iter()
            .map(|id| {
                if group.members.contains_key(id) {
                    tracing::info!(member = %id, "left its group");
                    group.remove(id, now);
                    None
                } else {
                    Some(ResponseError::UnknownMemberId)
                }
            })
            .collect()
    }

    /// May this member commit offsets for this generation? `-1` and no member id is
    /// a commit from outside the group protocol (tools, a manually assigned consumer).
    pub fn may_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Option<ResponseError> {
        if generation < 0 && member_id.is_empty() {
            return None;
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        member.last_seen = now;
        if generation != group.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        // As Kafka: a member of the current generation may commit while the next
        // rebalance is being prepared (what it finished before giving its partitions
        // up), not between the join and the assignment.
        match group.state {
            State::Stable | State::Preparing => None,
            State::Completing | State::Empty => Some(ResponseError::RebalanceInProgress),
        }
    }

    /// Removes dead members and completes joins past their deadline. Called a few
    /// times a second.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for (name, group) in groups.iter_mut() {
            let mut dead = Vec::new();
            for (id, member) in group.members.iter_mut() {
                let waiting = [
                    member.joining.as_ref().map(|t| t.is_closed()),
                    member.syncing.as_ref().map(|t| t.is_closed()),
                ];
                if waiting.contains(&Some(true)) {
                    dead.push((id.clone(), "its connection closed while it waited"));
                } else if waiting.contains(&Some(false)) {
                    member.last_seen = now;
                } else if now.duration_since(member.last_seen) > member.session_timeout {
                    dead.push((id.clone(), "no heartbeat within its session timeout"));
                }
            }
            for (id, why) in dead {
                tracing::info!(group = %name, member = %id, why, "removing a group member");
                group.remove(&id, now);
            }
            group.try_complete_join(now);
        }
    }

    pub fn describe(&self, group_id: &str) -> Option<Description> {
        self.lock().get(group_id).map(Group::describe)
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        self.lock()
            .iter()
            .map(|(id, g)| {
                let d = g.describe();
                (id.clone(), d.protocol_type, d.state)
            })
            .collect()
    }
}

impl Group {
    fn describe(&self) -> Description {
        let group = self;
        let state = match group.state {
            State::Empty => "Empty",
            State::Preparing => "PreparingRebalance",
            State::Completing => "CompletingRebalance",
            State::Stable => "Stable",
        };
        let protocol = group.protocol.clone().unwrap_or_default();
        Description {
            state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            members: group
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    (
                        id.clone(),
                        m.client_id.clone(),
                        metadata,
                        m.assignment.clone(),
                    )
                })
                .collect(),
            protocol,
        }
    }
}

#[cfg(test)]
mod tests;

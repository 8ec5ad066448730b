use super::*;

const GROUP: &str = "g";

fn request(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        client_id: "c".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: vec![
            ("range".into(), Bytes::from_static(b"r")),
            ("roundrobin".into(), Bytes::from_static(b"rr")),
        ],
    }
}

fn answered<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
    rx.try_recv().ok()
}

/// Joins one member and completes its first generation (it is its own leader).
fn stable_member(c: &Coordinator, now: Instant) -> Joined {
    let joined = answered(&mut c.join(GROUP, request(""), now)).expect("alone: at once");
    assert_eq!(joined.error, None);
    let synced = answered(&mut c.sync(
        GROUP,
        &joined.member_id,
        joined.generation,
        vec![(joined.member_id.clone(), Bytes::from_static(b"all"))],
        now,
    ))
    .expect("leader's sync answers at once");
    assert_eq!(synced.assignment, Bytes::from_static(b"all"));
    joined
}

#[test]
fn a_join_waits_for_every_known_member_then_the_leader_assigns() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = stable_member(&c, t);
    // b joins: a must rejoin before anyone is answered.
    let mut b_join = c.join(GROUP, request(""), t);
    assert!(
        answered(&mut b_join).is_none(),
        "barrier: a has not rejoined"
    );
    assert_eq!(
        c.heartbeat(GROUP, &a.member_id, a.generation, t),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut a_join = c.join(GROUP, request(&a.member_id), t);
    let a2 = answered(&mut a_join).expect("complete");
    let b = answered(&mut b_join).expect("complete");
    assert_eq!(a2.generation, a.generation + 1);
    assert_eq!(a2.leader, a.member_id, "the leader stays");
    assert_eq!(a2.members.len(), 2);
    assert!(b.members.is_empty(), "only the leader sees the members");
    assert_eq!(a2.protocol.as_deref(), Some("range"));
    // b syncs first and waits for the leader's assignment.
    let mut b_sync = c.sync(GROUP, &b.member_id, b.generation, vec![], t);
    assert!(answered(&mut b_sync).is_none());
    let assignments = vec![
        (a.member_id.clone(), Bytes::from_static(b"p0")),
        (b.member_id.clone(), Bytes::from_static(b"p1")),
    ];
    let a_sync = answered(&mut c.sync(GROUP, &a.member_id, a2.generation, assignments, t));
    assert_eq!(
        a_sync.expect("leader").assignment,
        Bytes::from_static(b"p0")
    );
    assert_eq!(
        answered(&mut b_sync).expect("released").assignment,
        Bytes::from_static(b"p1")
    );
    assert_eq!(c.heartbeat(GROUP, &b.member_id, b.generation, t), None);
    assert_eq!(
        c.heartbeat(GROUP, &b.member_id, a.generation, t),
        Some(ResponseError::IllegalGeneration)
    );
}

#[test]
fn a_leader_that_dies_before_assigning_does_not_stall_the_group() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = stable_member(&c, t);
    let mut b_join = c.join(GROUP, request(""), t);
    let a_join = c.join(GROUP, request(&a.member_id), t);
    let b = answered(&mut b_join).expect("complete");
    // a (the leader) is killed: it never syncs and never heartbeats.
    drop(a_join);
    let mut b_sync = c.sync(GROUP, &b.member_id, b.generation, vec![], t);
    // b waits in SyncGroup past a's session timeout: b is alive, a is not.
    c.tick(t + Duration::from_secs(11));
    let released = answered(&mut b_sync).expect("rebalance answers the waiting member");
    assert_eq!(released.error, Some(ResponseError::RebalanceInProgress));
    let b2 = answered(&mut c.join(GROUP, request(&b.member_id), t + Duration::from_secs(11)))
        .expect("b alone completes the join");
    assert_eq!(
        (b2.leader.as_str(), b2.members.len()),
        (b.member_id.as_str(), 1)
    );
    assert!(b2.generation > b.generation);
}

#[test]
fn a_member_killed_while_joining_is_removed_at_once() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = stable_member(&c, t);
    let b_join = c.join(GROUP, request(""), t);
    drop(b_join); // its connection closed: the process was killed inside JoinGroup
    c.tick(t);
    let mut a_join = c.join(GROUP, request(&a.member_id), t);
    let a2 = answered(&mut a_join).expect("a alone");
    assert_eq!(a2.members.len(), 1);
}

#[test]
fn members_that_stop_heartbeating_are_removed_and_others_rebalance() {
    let c = Coordinator::default();
    let t = Instant::now();
    let a = stable_member(&c, t);
    let mut b_join = c.join(GROUP, request(""), t);
    let mut a_join = c.join(GROUP, request(&a.member_id), t);
    let a2 = answered(&mut a_join).expect("complete");
    let b = answered(&mut b_join).expect("complete");
    // Commits are refused between the join and the assignment, allowed after.
    assert_eq!(
        c.may_commit(GROUP, &b.member_id, b.generation, t),
        Some(ResponseError::RebalanceInProgress)
    );
    let _ = answered(&mut c.sync(GROUP, &a.member_id, a2.generation, vec![], t));
    assert_eq!(c.may_commit(GROUP, &b.member_id, b.generation, t), None);
    // a keeps heartbeating, b is gone.
    let later = t + Duration::from_secs(8);
    assert_eq!(c.heartbeat(GROUP, &a.member_id, a2.generation, later), None);
    c.tick(t + Duration::from_secs(11));
    assert_eq!(
        c.heartbeat(
            GROUP,
            &a.member_id,
            a2.generation,
            t + Duration::from_secs(11)
        ),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        c.heartbeat(
            GROUP,
            &b.member_id,
            b.generation,
            t + Duration::from_secs(11)
        ),
        Some(ResponseError::UnknownMemberId)
    );
    // While the next rebalance is prepared, a may still commit what it finished.
    assert_eq!(
        c.may_commit(
            GROUP,
            &a.member_id,
            a2.generation,
            t + Duration::from_secs(11)
        ),
        None
    );
}

#[test]
fn unknown_members_and_bad_requests_are_refused() {
    let c = Coordinator::default();
    let t = Instant::now();
    let stale = answered(&mut c.join(GROUP, request("ghost"), t)).expect("refused");
    assert_eq!(stale.error, Some(ResponseError::UnknownMemberId));
    let mut short = request("");
    short.session_timeout = Duration::from_millis(10);
    let refused = answered(&mut c.join(GROUP, short, t)).expect("refused");
    assert_eq!(refused.error, Some(ResponseError::InvalidSessionTimeout));
    let a = stable_member(&c, t);
    let mut other = request("");
    other.protocols = vec![("sticky".into(), Bytes::new())];
    let refused = answered(&mut c.join(GROUP, other, t)).expect("refused");
    assert_eq!(
        refused.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    assert_eq!(c.may_commit(GROUP, &a.member_id, a.generation, t), None);
    assert_eq!(
        c.may_commit(GROUP, &a.member_id, a.generation - 1, t),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(c.may_commit(GROUP, "", -1, t), None);
    assert_eq!(
        c.leave(GROUP, std::slice::from_ref(&a.member_id), t),
        vec![None]
    );
    assert_eq!(c.describe(GROUP).expect("kept").state, "Empty");
}

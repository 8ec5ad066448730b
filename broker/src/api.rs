//! The Kafka APIs the broker answers, one function each: decode the request at the
//! version the client chose, act on the store or the group coordinator, encode the
//! response. [`SUPPORTED`] is what ApiVersions advertises — what librdkafka (and so
//! every Spur service) needs from a single node, and the group and topic
//! administration Kafka's own tools use. Transactions, ACLs, SASL and replication
//! are not offered; a client asking for them is told so by ApiVersions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::Shared;
use crate::batch;
use crate::group::{JoinRequest, Joined, Synced};
use crate::log::{self, Appended, Refused};
use crate::store::{Committed, Topic, TopicRefused};

/// (API, lowest version, highest version) this broker answers.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::InitProducerId, 0, 4),
];

/// The broker's node id: there is one node.
const NODE: i32 = 0;
/// Longest a fetch waits for data, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("API key {0} is not supported")]
    UnknownApi(i16),
    #[error("{0:?} v{1} is not supported")]
    Version(ApiKey, i16),
}

fn malformed(e: impl std::fmt::Display) -> Fatal {
    Fatal::Malformed(e.to_string())
}

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Result<Bytes, Fatal> {
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, R::header_version(version))
        .map_err(malformed)?;
    response.encode(&mut out, version).map_err(malformed)?;
    Ok(out.freeze())
}

/// Answers one request frame (without its length prefix). `None`: no answer is due
/// (a produce with `acks=0`).
pub async fn handle(shared: &Arc<Shared>, mut frame: Bytes) -> Result<Option<Bytes>, Fatal> {
    if frame.len() < 4 {
        return Err(Fatal::Malformed(
            "frame shorter than a request header".into(),
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| Fatal::UnknownApi(raw_key))?;
    let supported = SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .ok_or(Fatal::UnknownApi(raw_key))?;
    if key == ApiKey::ApiVersions && version > supported.2 {
        // Kafka's rule: answer at v0 with the error and the versions it does support.
        let correlation_id = if frame.len() >= 8 {
            i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]])
        } else {
            0
        };
        let mut response = api_versions();
        response.error_code = ResponseError::UnsupportedVersion.code();
        return encode(correlation_id, 0, &response).map(Some);
    }
    if version < supported.1 || version > supported.2 {
        return Err(Fatal::Version(key, version));
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(malformed)?;
    let client_id = header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let cid = header.correlation_id;
    macro_rules! decode {
        ($t:ty) => {
            <$t>::decode(&mut frame, version).map_err(malformed)?
        };
    }
    let response = match key {
        ApiKey::ApiVersions => encode(cid, version, &api_versions())?,
        ApiKey::Metadata => encode(
            cid,
            version,
            &metadata(shared, decode!(MetadataRequest), version),
        )?,
        ApiKey::Produce => {
            let request = decode!(ProduceRequest);
            let acks = request.acks;
            let response = produce(shared, request).await;
            if acks == 0 {
                return Ok(None);
            }
            encode(cid, version, &response)?
        }
        ApiKey::Fetch => encode(cid, version, &fetch(shared, decode!(FetchRequest)).await)?,
        ApiKey::ListOffsets => encode(
            cid,
            version,
            &list_offsets(shared, decode!(ListOffsetsRequest)),
        )?,
        ApiKey::InitProducerId => encode(
            cid,
            version,
            &init_producer_id(shared, decode!(InitProducerIdRequest)),
        )?,
        ApiKey::CreateTopics => encode(
            cid,
            version,
            &create_topics(shared, decode!(CreateTopicsRequest)),
        )?,
        ApiKey::FindCoordinator => encode(
            cid,
            version,
            &find_coordinator(shared, decode!(FindCoordinatorRequest), version),
        )?,
        ApiKey::JoinGroup => encode(
            cid,
            version,
            &join_group(shared, decode!(JoinGroupRequest), client_id, version).await,
        )?,
        ApiKey::SyncGroup => encode(
            cid,
            version,
            &sync_group(shared, decode!(SyncGroupRequest)).await,
        )?,
        ApiKey::Heartbeat => encode(cid, version, &heartbeat(shared, decode!(HeartbeatRequest)))?,
        ApiKey::LeaveGroup => encode(
            cid,
            version,
            &leave_group(shared, decode!(LeaveGroupRequest), version),
        )?,
        ApiKey::OffsetCommit => encode(
            cid,
            version,
            &offset_commit(shared, decode!(OffsetCommitRequest)),
        )?,
        ApiKey::OffsetFetch => encode(
            cid,
            version,
            &offset_fetch(shared, decode!(OffsetFetchRequest), version),
        )?,
        ApiKey::DescribeGroups => encode(
            cid,
            version,
            &describe_groups(shared, decode!(DescribeGroupsRequest)),
        )?,
        ApiKey::ListGroups => encode(cid, version, &list_groups(shared))?,
        _ => return Err(Fatal::UnknownApi(raw_key)),
    };
    Ok(Some(response))
}

fn api_versions() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    response
}

/// A topic for Metadata, or its name (when known) and why it cannot be described.
type Described = Result<Arc<Topic>, (Option<String>, ResponseError)>;

fn metadata(shared: &Shared, request: MetadataRequest, version: i16) -> MetadataResponse {
    let store = &shared.store;
    let topics: Vec<Described> = match request.topics {
        None => store.topics().into_iter().map(Ok).collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|t| {
                let Some(name) = t.name.map(|n| n.0.to_string()) else {
                    return store
                        .topics()
                        .into_iter()
                        .find(|topic| topic.id == t.topic_id)
                        .ok_or((None, ResponseError::UnknownTopicId));
                };
                if let Some(topic) = store.topic(&name) {
                    return Ok(topic);
                }
                // v1–v3 have no flag: auto-creation was always allowed.
                let allowed = version < 4 || request.allow_auto_topic_creation;
                if !(allowed && shared.config.auto_create_topics) {
                    return Err((Some(name), ResponseError::UnknownTopicOrPartition));
                }
                match store.create_topic(
                    &name,
                    shared.config.default_partitions,
                    1,
                    BTreeMap::new(),
                ) {
                    Ok(Ok(topic)) => Ok(topic),
                    Ok(Err(TopicRefused::Exists)) => store
                        .topic(&name)
                        .ok_or((Some(name), ResponseError::UnknownTopicOrPartition)),
                    Ok(Err(_)) => Err((Some(name), ResponseError::InvalidTopicException)),
                    Err(e) => {
                        tracing::error!(topic = %name, error = %e, "auto-creating a topic failed");
                        Err((Some(name), ResponseError::KafkaStorageError))
                    }
                }
            })
            .collect(),
    };
    let mut response = MetadataResponse::default();
    response.brokers = vec![
        MetadataResponseBroker::default()
            .with_node_id(NODE.into())
            .with_host(s(shared.advertised.0.clone()))
            .with_port(shared.advertised.1),
    ];
    response.cluster_id = Some(s(crate::CLUSTER_ID));
    response.controller_id = NODE.into();
    response.topics = topics
        .into_iter()
        .map(|t| match t {
            Ok(topic) => MetadataResponseTopic::default()
                .with_name(Some(s(topic.name.clone()).into()))
                .with_topic_id(topic.id)
                .with_partitions(
                    (0..topic.partition_count())
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(NODE.into())
                                .with_leader_epoch(0)
                                .with_replica_nodes(vec![NODE.into()])
                                .with_isr_nodes(vec![NODE.into()])
                        })
                        .collect(),
                ),
            Err((name, error)) => MetadataResponseTopic::default()
                .with_name(name.map(|n| s(n).into()))
                .with_error_code(error.code()),
        })
        .collect();
    response
}

async fn produce(shared: &Arc<Shared>, request: ProduceRequest) -> ProduceResponse {
    let transactional = request.transactional_id.is_some();
    let mut responses = Vec::new();
    let mut appended = false;
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = shared.store.topic(&name);
        let mut partitions = Vec::new();
        for partition in topic_data.partition_data {
            let mut answer = PartitionProduceResponse::default()
                .with_index(partition.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let outcome = match (&topic, partition.records) {
                _ if transactional => Err((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "transactions are not supported by this broker".to_string(),
                )),
                (None, _) => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name}"),
                )),
                (Some(_), None) => Err((ResponseError::InvalidRecord, "no records".to_string())),
                (Some(topic), Some(records)) => {
                    append(shared, topic.clone(), partition.index, records).await
                }
            };
            match outcome {
                Ok((base, log_start)) => {
                    appended = true;
                    answer.base_offset = base;
                    answer.log_start_offset = log_start;
                }
                Err((error, message)) => {
                    tracing::debug!(topic = %name, partition = partition.index, %message, "produce refused");
                    answer.error_code = error.code();
                    answer.error_message = Some(s(message));
                }
            }
            partitions.push(answer);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partitions),
        );
    }
    if appended {
        shared.appended.notify_waiters();
    }
    ProduceResponse::default().with_responses(responses)
}

/// Checks and appends one partition's record set; with `fsync`, the data is on disk
/// before this returns. Returns (base offset, log start offset).
async fn append(
    shared: &Arc<Shared>,
    topic: Arc<Topic>,
    partition: i32,
    records: Bytes,
) -> Result<(i64, i64), (ResponseError, String)> {
    let max_batch = shared.config.max_batch_bytes;
    let fsync = shared.config.fsync;
    let work = move || {
        let batches = batch::split(&records, max_batch).map_err(|e| {
            let error = match e {
                batch::Invalid::TooLarge(_) => ResponseError::MessageTooLarge,
                batch::Invalid::Magic(_) => ResponseError::UnsupportedForMessageFormat,
                batch::Invalid::Crc => ResponseError::CorruptMessage,
                _ => ResponseError::InvalidRecord,
            };
            (error, e.to_string())
        })?;
        let Some(mut log) = topic.partition(partition) else {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("{} has no partition {partition}", topic.name),
            ));
        };
        let now = SystemTime::now();
        let mut first = None;
        let mut to_sync = Vec::new();
        for (header, bytes) in batches {
            let (appended, file) = log.append(header, bytes, now).map_err(|e| match e {
                log::Error::Refused(Refused::StaleEpoch { .. }) => {
                    (ResponseError::InvalidProducerEpoch, e.to_string())
                }
                log::Error::Refused(Refused::OutOfOrder { .. }) => {
                    (ResponseError::OutOfOrderSequenceNumber, e.to_string())
                }
                other => {
                    tracing::error!(error = %other, "writing the log failed");
                    (ResponseError::KafkaStorageError, other.to_string())
                }
            })?;
            let base = match appended {
                Appended::New(base) | Appended::Duplicate(base) => base,
            };
            first.get_or_insert(base);
            if let Some(file) = file
                && !to_sync.iter().any(|f| Arc::ptr_eq(f, &file))
            {
                to_sync.push(file);
            }
        }
        let log_start = log.log_start();
        drop(log);
        if fsync {
            for file in to_sync {
                file.sync_data().map_err(|e| {
                    tracing::error!(error = %e, "fsync of the log failed");
                    (ResponseError::KafkaStorageError, e.to_string())
                })?;
            }
        }
        Ok((first.unwrap_or(-1), log_start))
    };
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err((ResponseError::UnknownServerError, e.to_string())))
}

async fn fetch(shared: &Arc<Shared>, request: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let request = Arc::new(request);
    loop {
        let notified = shared.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (response, bytes, errors) = {
            let shared = shared.clone();
            let request = request.clone();
            tokio::task::spawn_blocking(move || read_fetch(&shared, &request))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a fetch failed");
                    (
                        FetchResponse::default()
                            .with_error_code(ResponseError::UnknownServerError.code()),
                        0,
                        true,
                    )
                })
        };
        if errors
            || bytes >= request.min_bytes.max(1) as usize
            || tokio::time::Instant::now() >= deadline
        {
            return response;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// One pass over the requested partitions: (response, bytes of records, any error).
fn read_fetch(shared: &Shared, request: &FetchRequest) -> (FetchResponse, usize, bool) {
    let mut budget = request.max_bytes.max(0) as usize;
    if budget == 0 {
        budget = usize::MAX;
    }
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::new();
    for wanted in &request.topics {
        let topic = shared.store.topic(&wanted.topic.0);
        let mut partitions = Vec::new();
        for p in &wanted.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(Some(Vec::new()))
                .with_records(Some(Bytes::new()));
            let log = topic.as_ref().and_then(|t| t.partition(p.partition));
            let Some(log) = log else {
                data.error_code = ResponseError::UnknownTopicOrPartition.code();
                errors = true;
                partitions.push(data);
                continue;
            };
            data.high_watermark = log.log_end();
            data.last_stable_offset = log.log_end();
            data.log_start_offset = log.log_start();
            // The first partition always gets at least one batch (KIP-74); the others
            // only what fits the response's remaining budget.
            let room = if total == 0 {
                usize::MAX
            } else {
                budget.saturating_sub(total)
            };
            let max = (p.partition_max_bytes.max(0) as usize).min(room);
            let plan = if max == 0 && total > 0 {
                Some(Vec::new())
            } else {
                log.read(p.fetch_offset, max.max(1))
            };
            drop(log);
            let Some(chunks) = plan else {
                data.error_code = ResponseError::OffsetOutOfRange.code();
                errors = true;
                partitions.push(data);
                continue;
            };
            let mut records = BytesMut::with_capacity(chunks.iter().map(|c| c.len).sum());
            for chunk in chunks {
                let start = records.len();
                records.resize(start + chunk.len, 0);
                if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(
                    chunk.file.as_ref(),
                    &mut records[start..],
                    chunk.pos,
                ) {
                    tracing::error!(error = %e, "reading the log failed");
                    records.truncate(start);
                    data.error_code = ResponseError::KafkaStorageError.code();
                    errors = true;
                    break;
                }
            }
            total += records.len();
            data.records = Some(records.freeze());
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(wanted.topic.clone())
                .with_topic_id(wanted.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        errors,
    )
}

fn list_offsets(shared: &Shared, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.store.topic(&t.name.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(0);
                    let Some(log) = topic.as_ref().and_then(|t| t.partition(p.partition_index))
                    else {
                        answer.error_code = ResponseError::UnknownTopicOrPartition.code();
                        return answer;
                    };
                    match p.timestamp {
                        -2 => answer.offset = log.log_start(),
                        -1 | -3 => answer.offset = log.log_end(),
                        ts => {
                            if let Some((offset, at)) = log.offset_for_time(ts) {
                                answer.offset = offset;
                                answer.timestamp = at;
                            }
                        }
                    }
                    answer
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn init_producer_id(shared: &Shared, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // An existing producer asking for a new epoch (KIP-360) keeps its id.
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match shared.store.new_producer_id() {
        Ok(id) => response.with_producer_id(id.into()).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "recording a producer id failed");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

fn create_topics(shared: &Shared, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = if t.num_partitions == -1 {
                shared.config.default_partitions
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> = t
                .configs
                .into_iter()
                .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                .collect();
            let outcome = if request.validate_only {
                shared
                    .store
                    .check_topic(&name, partitions, t.replication_factor, &configs)
                    .map(|()| None)
                    .map_err(Some)
            } else {
                match shared
                    .store
                    .create_topic(&name, partitions, t.replication_factor, configs)
                {
                    Ok(Ok(topic)) => Ok(Some(topic)),
                    Ok(Err(refused)) => Err(Some(refused)),
                    Err(e) => {
                        tracing::error!(topic = %name, error = %e, "creating a topic failed");
                        Err(None)
                    }
                }
            };
            let result = CreatableTopicResult::default()
                .with_name(t.name)
                .with_num_partitions(partitions)
                .with_replication_factor(1);
            match outcome {
                Ok(topic) => result.with_topic_id(topic.map(|t| t.id).unwrap_or_default()),
                Err(refused) => {
                    let (error, message) = match refused {
                        Some(r @ TopicRefused::Exists) => {
                            (ResponseError::TopicAlreadyExists, r.to_string())
                        }
                        Some(r @ TopicRefused::InvalidName) => {
                            (ResponseError::InvalidTopicException, r.to_string())
                        }
                        Some(r @ TopicRefused::Partitions) => {
                            (ResponseError::InvalidPartitions, r.to_string())
                        }
                        Some(r @ TopicRefused::Replication) => {
                            (ResponseError::InvalidReplicationFactor, r.to_string())
                        }
                        Some(r @ TopicRefused::Config(_)) => {
                            (ResponseError::InvalidConfig, r.to_string())
                        }
                        None => (
                            ResponseError::KafkaStorageError,
                            "the broker could not write the topic".into(),
                        ),
                    };
                    result
                        .with_error_code(error.code())
                        .with_error_message(Some(s(message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn find_coordinator(
    shared: &Shared,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = (s(shared.advertised.0.clone()), shared.advertised.1);
    let response = FindCoordinatorResponse::default();
    if version >= 4 {
        return response.with_coordinators(
            request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    CoordinatorEntry::default()
                        .with_key(key)
                        .with_node_id(NODE.into())
                        .with_host(host.clone())
                        .with_port(port)
                })
                .collect(),
        );
    }
    response
        .with_node_id(NODE.into())
        .with_host(host)
        .with_port(port)
}

async fn join_group(
    shared: &Shared,
    request: JoinGroupRequest,
    client_id: String,
    version: i16,
) -> JoinGroupResponse {
    let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    let rebalance_timeout = if version == 0 || request.rebalance_timeout_ms < 0 {
        session_timeout
    } else {
        Duration::from_millis(request.rebalance_timeout_ms as u64)
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        client_id,
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
    };
    let rx = shared
        .groups
        .join(&request.group_id.0, join, Instant::now());
    let joined = rx.await.unwrap_or_else(|_| Joined {
        error: Some(ResponseError::CoordinatorNotAvailable),
        generation: -1,
        ..Joined::default()
    });
    JoinGroupResponse::default()
        .with_error_code(code(joined.error))
        .with_generation_id(joined.generation)
        .with_protocol_type(joined.protocol_type.map(s))
        .with_protocol_name(joined.protocol.map(s))
        .with_leader(s(joined.leader))
        .with_member_id(s(joined.member_id))
        .with_members(
            joined
                .members
                .into_iter()
                .map(|(id, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

async fn sync_group(shared: &Shared, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let rx = shared.groups.sync(
        &request.group_id.0,
        &request.member_id,
        request.generation_id,
        assignments,
        Instant::now(),
    );
    let synced = rx.await.unwrap_or_else(|_| Synced {
        error: Some(ResponseError::CoordinatorNotAvailable),
        ..Synced::default()
    });
    SyncGroupResponse::default()
        .with_error_code(code(synced.error))
        .with_protocol_type(synced.protocol_type.map(s))
        .with_protocol_name(synced.protocol.map(s))
        .with_assignment(synced.assignment)
}

fn heartbeat(shared: &Shared, request: HeartbeatRequest) -> HeartbeatResponse {
    let error = shared.groups.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.generation_id,
        Instant::now(),
    );
    HeartbeatResponse::default().with_error_code(code(error))
}

fn leave_group(shared: &Shared, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let ids: Vec<String> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![request.member_id.to_string()]
    };
    let results = shared
        .groups
        .leave(&request.group_id.0, &ids, Instant::now());
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(code(results[0]));
    }
    LeaveGroupResponse::default().with_members(
        ids.into_iter()
            .zip(results)
            .map(|(id, error)| {
                MemberResponse::default()
                    .with_member_id(s(id))
                    .with_error_code(code(error))
            })
            .collect(),
    )
}

fn offset_commit(shared: &Shared, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let refused = shared.groups.may_commit(
        &group,
        &request.member_id,
        request.generation_id_or_member_epoch,
        Instant::now(),
    );
    let mut commits = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            commits.push((
                t.name.0.to_string(),
                p.partition_index,
                Committed {
                    offset: p.committed_offset,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                },
            ));
        }
    }
    let error = match refused {
        Some(e) => Some(e),
        None => shared.store.commit_offsets(&group, commits).err().map(|e| {
            tracing::error!(error = %e, "storing committed offsets failed");
            ResponseError::KafkaStorageError
        }),
    };
    OffsetCommitResponse::default().with_topics(
        request
            .topics
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code(error))
                            })
                            .collect(),
                    )
                    .with_name(t.name)
            })
            .collect(),
    )
}

/// Per topic, each partition's committed offset (`None`: nothing committed).
type CommittedByTopic = Vec<(String, Vec<(i32, Option<Committed>)>)>;

/// The requested partitions' committed offsets, or all of the group's.
fn committed_of(
    shared: &Shared,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> CommittedByTopic {
    let committed = shared.store.committed(group);
    match wanted {
        None => committed
            .into_iter()
            .map(|(topic, parts)| {
                (
                    topic,
                    parts.into_iter().map(|(p, c)| (p, Some(c))).collect(),
                )
            })
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(topic, parts)| {
                let known = committed.get(&topic);
                let parts = parts
                    .into_iter()
                    .map(|p| (p, known.and_then(|k| k.get(&p)).cloned()))
                    .collect();
                (topic, parts)
            })
            .collect(),
    }
}

/// The response topics of OffsetFetch, in the old (v1–v7) or the batched (v8) types,
/// which have the same fields.
macro_rules! offset_topics {
    ($topic:ty, $partition:ty, $committed:expr) => {
        $committed
            .into_iter()
            .map(|(topic, parts)| {
                <$topic>::default()
                    .with_name(s(topic).into())
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, c): (i32, Option<Committed>)| {
                                <$partition>::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(c.as_ref().map_or(-1, |c| c.offset))
                                    .with_committed_leader_epoch(-1)
                                    .with_metadata(Some(s(c
                                        .and_then(|c| c.metadata)
                                        .unwrap_or_default())))
                            })
                            .collect(),
                    )
            })
            .collect()
    };
}

fn offset_fetch(shared: &Shared, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let asked = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let committed = committed_of(shared, &g.group_id.0, asked);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(offset_topics!(
                        OffsetFetchResponseTopics,
                        OffsetFetchResponsePartitions,
                        committed
                    ))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let asked = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let committed = committed_of(shared, &request.group_id.0, asked);
    OffsetFetchResponse::default().with_topics(offset_topics!(
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition,
        committed
    ))
}

fn describe_groups(shared: &Shared, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            match shared.groups.describe(&id.0) {
                None => described.with_group_state(s("Dead")),
                Some(d) => described
                    .with_group_state(s(d.state))
                    .with_protocol_type(s(d.protocol_type))
                    .with_protocol_data(s(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|(member, client, metadata, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(member))
                                    .with_client_id(s(client))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

fn list_groups(shared: &Shared) -> ListGroupsResponse {
    ListGroupsResponse::default().with_groups(
        shared
            .groups
            .list()
            .into_iter()
            .map(|(id, protocol_type, state)| {
                ListedGroup::default()
                    .with_group_id(s(id).into())
                    .with_protocol_type(s(protocol_type))
                    .with_group_state(s(state))
            })
            .collect(),
    )
}

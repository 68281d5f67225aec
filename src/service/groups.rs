//! Durable subscriptions (consumer groups): made, listed, inspected,
//! reset and deleted by name, and consumed by any number of connected
//! consumers that share the events by entity and acknowledge positions.
//! The stored part (definition, progress, generations) is
//! [`crate::db::groups`]; this module keeps who is connected and gives
//! each consumer its [`Member`]: a [`Subscription`] of its part of the
//! events from the group's committed position, rebuilt whenever the group
//! changes generation.

use super::subscribe::{Start, Subscribe, Subscription};
use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::db::groups::{CreateError, Group, GroupDef};
use crate::ids::{GroupName, TableName, TenantId};
use crate::schema;
use arrow::array::RecordBatch;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// What makes a group.
#[derive(Debug, Clone)]
pub struct CreateGroup {
    pub name: GroupName,
    pub table: TableName,
    pub filter: Option<String>,
    pub where_dsl: Option<serde_json::Value>,
    pub start: Start,
    /// Deliver events as written, without schema migrations.
    pub raw: bool,
}

/// A group as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub name: String,
    pub table: String,
    pub filter: Option<String>,
    #[serde(rename = "where")]
    pub where_dsl: Option<serde_json::Value>,
    pub created_ms: i64,
    /// Whether it delivers events as written, without schema migrations.
    pub raw: bool,
    /// Every matching event up to here is acknowledged.
    pub committed_position: u64,
    pub generation: u64,
    /// Consumers connected now.
    pub consumers: usize,
    /// Positions of the table after the committed one, matching or not.
    pub lag_positions: u64,
    /// Matching events after the committed position (only when asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_events: Option<u64>,
    /// Age of the oldest of those, in seconds (only when asked; 0 when
    /// there are none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

/// The state of a group that changes its members' work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    generation: u64,
    deleted: bool,
}

/// A group with consumers connected (or recently so).
#[derive(Debug)]
struct Live {
    group: Arc<Group>,
    /// The connected consumers' ids, in the order they came: consumer
    /// `members[i]` takes part `i`.
    members: Mutex<Vec<u64>>,
    changes: watch::Sender<Change>,
}

impl Live {
    /// Changes the connected consumers with `change` (which says whether
    /// it changed anything) and starts a new generation for them from the
    /// committed position (or from `reset_to`), all under one hold of the
    /// consumer list, so that no consumer sees the new list with the old
    /// generation. On a storage error the list is left as it was.
    fn change_members(
        &self,
        change: impl FnOnce(&mut Vec<u64>) -> bool,
        reset_to: Option<u64>,
    ) -> std::io::Result<()> {
        let mut members = self.members.lock();
        let before = members.clone();
        if !change(&mut members) && reset_to.is_none() {
            return Ok(());
        }
        let n = members.len();
        let generation = self.group.update(|p| {
            p.committed = reset_to.unwrap_or_else(|| p.done());
            p.generation += 1;
            p.slots = vec![p.committed; n];
            p.generation
        });
        let generation = match generation {
            Ok(g) => g,
            Err(e) => {
                *members = before;
                return Err(e);
            }
        };
        self.group.members.store(n, Ordering::Relaxed);
        self.changes.send_replace(Change {
            generation,
            deleted: false,
        });
        Ok(())
    }
}

/// The groups with consumers, by tenant and name.
#[derive(Debug, Default)]
pub(super) struct Consumers {
    live: Mutex<HashMap<(TenantId, GroupName), Arc<Live>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Consumers {
    fn live(&self, group: &Arc<Group>) -> Arc<Live> {
        let mut live = self.live.lock();
        let key = (group.tenant.clone(), group.name.clone());
        match live.get(&key) {
            Some(l) if Arc::ptr_eq(&l.group, group) => l.clone(),
            _ => {
                let generation = group.progress().generation;
                let l = Arc::new(Live {
                    group: group.clone(),
                    members: Mutex::new(Vec::new()),
                    changes: watch::channel(Change {
                        generation,
                        deleted: false,
                    })
                    .0,
                });
                live.insert(key, l.clone());
                l
            }
        }
    }
}

/// What a consumer gets next.
#[derive(Debug)]
pub enum Delivery {
    /// The group has a new generation: the consumer now takes part
    /// `member` of `members`, from after `after` (events it had may come
    /// again).
    Assigned {
        member: usize,
        members: usize,
        generation: u64,
        after: u64,
    },
    Events(Vec<RecordBatch>),
    /// Nothing new for the wait asked.
    Idle,
}

/// One connected consumer of a group.
#[derive(Debug)]
pub struct Member {
    service: Arc<Service>,
    caller: Principal,
    live: Arc<Live>,
    id: u64,
    changes: watch::Receiver<Change>,
    /// The generation `subscription` serves (0: none yet).
    generation: u64,
    part: usize,
    subscription: Option<Subscription>,
}

fn io_error(e: std::io::Error) -> Error {
    Error::internal(format!("cannot store the subscription's progress: {e}"))
}

/// The table a group reads (its name was checked when it was made).
fn table_of(group: &Group) -> Result<TableName> {
    group
        .table()
        .ok_or_else(|| Error::internal("the subscription names an invalid table"))
}

fn no_group(name: &GroupName) -> Error {
    Error::new(
        Kind::NotFound,
        format!("subscription {:?} does not exist", name.as_str()),
    )
}

impl Service {
    fn group(&self, caller: &Principal, name: &GroupName) -> Result<Arc<Group>> {
        self.db
            .groups()
            .get(&caller.tenant, name)
            .ok_or_else(|| no_group(name))
    }

    /// Makes a group (the writer role), checking its table and filter as a
    /// subscription does.
    pub async fn create_group(
        self: &Arc<Self>,
        caller: &Principal,
        request: CreateGroup,
    ) -> Result<GroupInfo> {
        caller.require(Role::Writer, "create subscriptions")?;
        let table = self.table_of(caller, &request.table)?;
        let mut check = Subscribe::new(request.table.clone(), Start::After(u64::MAX));
        check.filter = request.filter.clone();
        check.where_dsl = request.where_dsl.clone();
        drop(self.subscribe(caller, check).await?);
        let after = self.start_position(caller, &table, request.start).await?;
        let def = GroupDef {
            table: request.table.to_string(),
            filter: request.filter,
            where_dsl: request.where_dsl,
            created_ms: chrono::Utc::now().timestamp_millis(),
            raw: request.raw,
            policies: self.read_fingerprint(caller, request.table.as_str()),
        };
        let (service, tenant, name) = (self.clone(), caller.tenant.clone(), request.name);
        let cap = self.config().max_consumer_groups.max(1);
        let group = tokio::task::spawn_blocking(move || {
            service.db.groups().create(&tenant, &name, def, after, cap)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| match e {
            CreateError::Exists(_) => Error::new(Kind::Conflict, e.to_string()),
            CreateError::Full { .. } => Error::new(Kind::Overloaded, e.to_string()),
            CreateError::Io(e) => io_error(e),
        })?;
        Ok(self.group_info(&group))
    }

    /// A tenant's groups, without the lag in events (see [`Self::describe_group`]).
    pub fn list_groups(&self, caller: &Principal) -> Result<Vec<GroupInfo>> {
        caller.require(Role::Reader, "list subscriptions")?;
        Ok(self
            .db
            .groups()
            .list(&caller.tenant)
            .iter()
            .map(|g| self.group_info(g))
            .collect())
    }

    pub(super) fn group_info(&self, group: &Group) -> GroupInfo {
        let progress = group.progress();
        let done = progress.done();
        GroupInfo {
            name: group.name.to_string(),
            table: group.def.table.clone(),
            filter: group.def.filter.clone(),
            where_dsl: group.def.where_dsl.clone(),
            created_ms: group.def.created_ms,
            raw: group.def.raw,
            committed_position: done,
            generation: progress.generation,
            consumers: group.member_count(),
            lag_positions: group.lag_positions(&self.db),
            lag_events: None,
            lag_seconds: None,
        }
    }

    /// A group, with its lag in matching events and in seconds (a query).
    pub async fn describe_group(&self, caller: &Principal, name: &GroupName) -> Result<GroupInfo> {
        caller.require(Role::Reader, "inspect subscriptions")?;
        let group = self.group(caller, name)?;
        let mut info = self.group_info(&group);
        let table = table_of(&group)?;
        if self.db.table(&caller.tenant, &table).is_some() {
            let mut request = Subscribe::new(table.clone(), Start::Earliest);
            request.filter = group.def.filter.clone();
            request.where_dsl = group.def.where_dsl.clone();
            let filter = self.conditions(caller, &request).await?;
            let sql = format!(
                "SELECT count(*) AS n, CAST(coalesce(extract(epoch FROM now()) - extract(epoch FROM min({at})), 0) AS DOUBLE) AS age FROM \"{table}\" WHERE {position} > {after} AND {position} < {end}{filter}",
                end = self
                    .db
                    .table(&caller.tenant, &table)
                    .map_or(u64::MAX, |t| t.positions_end())
                    .min(i64::MAX as u64),
                table = table.as_str(),
                at = schema::INGESTED_AT,
                position = schema::POSITION,
                after = info.committed_position,
            );
            let (n, age) = self.count_and_age(caller, &sql).await?;
            info.lag_events = Some(n);
            info.lag_seconds = Some(age.max(0.0));
        }
        Ok(info)
    }

    /// Moves a group to after a position or time (the writer role); its
    /// consumers start again from there.
    pub async fn reset_group(
        &self,
        caller: &Principal,
        name: &GroupName,
        start: Start,
    ) -> Result<GroupInfo> {
        caller.require(Role::Writer, "reset subscriptions")?;
        let group = self.group(caller, name)?;
        let table = self.table_of(caller, &table_of(&group)?)?;
        let after = self.start_position(caller, &table, start).await?;
        let live = self.consumers.live(&group);
        tokio::task::spawn_blocking(move || live.change_members(|_| false, Some(after)))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(io_error)?;
        Ok(self.group_info(&group))
    }

    /// Deletes a group (the writer role); its consumers are closed.
    pub async fn delete_group(&self, caller: &Principal, name: &GroupName) -> Result<()> {
        caller.require(Role::Writer, "delete subscriptions")?;
        let group = self.group(caller, name)?;
        let (db, tenant, n) = (self.db.clone(), caller.tenant.clone(), name.clone());
        let deleted = tokio::task::spawn_blocking(move || db.groups().delete(&tenant, &n))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(io_error)?;
        if !deleted {
            return Err(no_group(name));
        }
        let live = self
            .consumers
            .live
            .lock()
            .remove(&(caller.tenant.clone(), name.clone()));
        if let Some(live) = live.filter(|l| Arc::ptr_eq(&l.group, &group)) {
            live.changes.send_modify(|c| c.deleted = true);
        }
        Ok(())
    }

    /// Joins `caller` to a group as one more consumer (the reader role):
    /// the group rebalances.
    pub async fn join_group(
        self: &Arc<Self>,
        caller: &Principal,
        name: &GroupName,
    ) -> Result<Member> {
        caller.require(Role::Reader, "consume subscriptions")?;
        let group = self.group(caller, name)?;
        self.same_view(caller, name.as_str(), &group.def)?;
        let live = self.consumers.live(&group);
        let id = self.consumers.next_id.fetch_add(1, Ordering::Relaxed);
        let joining = live.clone();
        tokio::task::spawn_blocking(move || {
            joining.change_members(
                |members| {
                    members.push(id);
                    true
                },
                None,
            )
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(io_error)?;
        Ok(Member {
            service: self.clone(),
            caller: caller.clone(),
            changes: live.changes.subscribe(),
            live,
            id,
            generation: 0,
            part: 0,
            subscription: None,
        })
    }

    /// The count and age (the first two columns) of `sql`'s one row.
    async fn count_and_age(&self, caller: &Principal, sql: &str) -> Result<(u64, f64)> {
        use arrow::array::AsArray;
        use arrow::datatypes::{Float64Type, Int64Type};
        use futures::TryStreamExt;
        let stream = self
            .queries
            .sql_with(caller, sql, None, crate::query::QueryOptions::default())
            .await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok((0, 0.0));
        };
        let n = b
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .map_or(0, |a| a.value(0).max(0) as u64);
        let age = b
            .column(1)
            .as_primitive_opt::<Float64Type>()
            .map_or(0.0, |a| a.value(0));
        Ok((n, age))
    }
}

impl Member {
    /// The last position read for this consumer (delivered or passed
    /// over): what it acknowledges once done with what it got.
    pub fn position(&self) -> u64 {
        self.subscription.as_ref().map_or(0, |s| s.position())
    }

    /// The next thing for this consumer, waiting up to `wait` for events.
    pub async fn next(&mut self, wait: Duration) -> Result<Delivery> {
        loop {
            let change = *self.changes.borrow_and_update();
            if change.deleted {
                return Err(Error::new(
                    Kind::NotFound,
                    format!(
                        "subscription {:?} was deleted",
                        self.live.group.name.as_str()
                    ),
                ));
            }
            if self.subscription.is_none() || change.generation != self.generation {
                return self.assign().await;
            }
            let Some(subscription) = self.subscription.as_mut() else {
                continue;
            };
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return Err(super::subscribe::shutting_down());
                    }
                }
                next = subscription.next(wait) => {
                    return Ok(match next? {
                        Some(batches) => Delivery::Events(batches),
                        None => Delivery::Idle,
                    });
                }
            }
        }
    }

    /// Takes this consumer's place in the current generation.
    async fn assign(&mut self) -> Result<Delivery> {
        // The old subscription's place is given up first: the tenant's cap
        // counts it. Until the new one is there, acknowledgements are of
        // no current generation (they are answered as stale).
        self.subscription = None;
        self.generation = 0;
        let (generation, part, members, after) = {
            let members = self.live.members.lock();
            let progress = self.live.group.progress();
            let part = members.iter().position(|m| *m == self.id);
            // The list and the stored generation change together; if a
            // change could not be stored they differ, and no part is safe
            // to take.
            let Some(part) = part.filter(|_| progress.slots.len() == members.len()) else {
                return Err(Error::new(
                    Kind::Unavailable,
                    "the subscription's consumers are changing; connect again",
                )
                .retry_after(1));
            };
            (
                progress.generation,
                part,
                members.len(),
                progress.slots[part],
            )
        };
        let group = &self.live.group;
        let table = table_of(group)?;
        let mut request = Subscribe::new(table, Start::After(after));
        request.filter = group.def.filter.clone();
        request.where_dsl = group.def.where_dsl.clone();
        request.raw = group.def.raw;
        request.part = Some((part as u32, members.max(1) as u32));
        self.subscription = Some(self.service.subscribe(&self.caller, request).await?);
        self.generation = generation;
        self.part = part;
        Ok(Delivery::Assigned {
            member: part,
            members,
            generation,
            after,
        })
    }

    /// The generation this consumer's events belong to (0 before its
    /// first assignment).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records that this consumer is done with every event it got in
    /// `generation` up to `position`, durably. An acknowledgement of an
    /// older generation changes nothing (its events come again in the new
    /// one, perhaps to another consumer): it is [`Acked::stale`].
    pub async fn ack(&self, position: u64, generation: u64) -> Result<Acked> {
        if generation != self.generation {
            return Ok(Acked {
                committed: self.live.group.progress().done(),
                stale: true,
            });
        }
        let read = self.position();
        if position > read {
            return Err(Error::invalid(format!(
                "ack {position} is past the last position sent, {read}"
            )));
        }
        let (live, part) = (self.live.clone(), self.part);
        tokio::task::spawn_blocking(move || {
            let _members = live.members.lock();
            live.group.update(|p| {
                let current = p.generation == generation;
                if current && let Some(slot) = p.slots.get_mut(part) {
                    *slot = (*slot).max(position);
                    p.committed = p.done();
                }
                Acked {
                    committed: p.committed,
                    stale: !current,
                }
            })
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(io_error)
    }
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The group's committed position after it.
    pub committed: u64,
    /// It was of an older generation and changed nothing.
    pub stale: bool,
}

impl Drop for Member {
    /// The group rebalances without this consumer.
    fn drop(&mut self) {
        let live = self.live.clone();
        let id = self.id;
        let leave = move || {
            if live.changes.borrow().deleted {
                return;
            }
            let left = live.change_members(
                |members| {
                    let before = members.len();
                    members.retain(|m| *m != id);
                    members.len() != before
                },
                None,
            );
            if let Err(e) = left {
                // Gone all the same; the others' parts stay as they are
                // until the next change is stored (they cannot take a new
                // part meanwhile: see `assign`).
                live.members.lock().retain(|m| *m != id);
                tracing::warn!(error = %e, group = %live.group.name, "cannot store a rebalance");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(leave)),
            Err(_) => leave(),
        }
    }
}

#[cfg(test)]
#[path = "groups_tests.rs"]
mod tests;

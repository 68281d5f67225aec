//! Versions of a projection: a higher version (or a rebuild of the same
//! one) folds its table's history in the background as the name's next
//! projection while the serving one answers reads; once it has folded as
//! far as the serving one it replaces it in one step (at once, or on a
//! promote call when it was defined so).

use super::projections::{ProjectionInfo, add_error};
use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::ProjectionName;
use crate::projection::{Live, Spec};
use std::sync::Arc;

impl Service {
    /// Starts `spec` as the next version of the caller's projection
    /// `name`; the serving projection's description, with it.
    pub(super) async fn define_next(
        self: &Arc<Self>,
        caller: &Principal,
        name: ProjectionName,
        spec: Spec,
        rebuild: bool,
    ) -> Result<ProjectionInfo> {
        let next = self.live_of(caller, name.clone(), spec, false).await?;
        if let Some(replaced) = self
            .projections
            .add_next(next.clone(), rebuild)
            .map_err(add_error)?
        {
            self.delete_snapshot_of(replaced);
        }
        self.spawn_projection(next);
        let serving = self.live(caller, &name)?;
        Ok(self.projection_info_with_next(&serving))
    }

    /// Folds the caller's projection `name` again from its table's first
    /// event (a writer's call), in the background; it replaces the serving
    /// state once caught up.
    pub async fn rebuild_projection(
        self: &Arc<Self>,
        caller: &Principal,
        name: &ProjectionName,
    ) -> Result<ProjectionInfo> {
        caller.require(Role::Writer, "rebuild projections")?;
        let serving = self.live(caller, name)?;
        // The rebuilder becomes its definer: it must read what it holds.
        self.projection_readable(caller, &serving)?;
        if let Some(next) = self.projections.next(&caller.tenant, name)
            && next.spec.version > serving.spec.version
        {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "version {} of projection {:?} is building; a rebuild of version {} would replace it (delete the projection, or wait until version {} serves)",
                    next.spec.version,
                    name.as_str(),
                    serving.spec.version,
                    next.spec.version
                ),
            ));
        }
        let spec = Spec {
            created_ms: chrono::Utc::now().timestamp_millis(),
            id: uuid::Uuid::now_v7().to_string(),
            manual_promote: false,
            ..serving.spec.clone()
        };
        self.define_next(caller, name.clone(), spec, true).await
    }

    /// Makes the next version of the caller's projection `name` the
    /// serving one (a writer's call): refused until it has caught up.
    pub fn promote_projection(
        &self,
        caller: &Principal,
        name: &ProjectionName,
    ) -> Result<ProjectionInfo> {
        caller.require(Role::Writer, "promote projections")?;
        let serving = self.live(caller, name)?;
        let Some(next) = self.projections.next(&caller.tenant, name) else {
            return Err(Error::new(
                Kind::NotFound,
                format!(
                    "projection {:?} has no next version building; define one with a higher version first",
                    name.as_str()
                ),
            ));
        };
        if !self.caught_up(&next, &serving) {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "version {} of projection {:?} has folded up to position {} of table {:?}; promote it once it has caught up",
                    next.spec.version,
                    name.as_str(),
                    next.position(),
                    next.table.as_str()
                ),
            ));
        }
        self.promote(&next)?;
        Ok(self.projection_info_with_next(&next))
    }

    /// Promotes `live` when it is a next version, defined to be promoted
    /// by itself, that has folded as far as the serving one.
    pub(super) fn promote_if_caught_up(&self, live: &Arc<Live>) {
        if live.spec.manual_promote || !self.projections.is_next(live) {
            return;
        }
        let Some(serving) = self.projections.get(&live.tenant, &live.name) else {
            return;
        };
        if self.caught_up(live, &serving)
            && let Err(e) = self.promote(live)
        {
            tracing::warn!(tenant = %live.tenant, projection = %live.name, error = %e.message, "the next version was not promoted; trying again");
        }
    }

    /// Whether `next` has folded as far as `serving`: to its position on
    /// the same table, or to the end of its own table when it reads
    /// another one.
    pub(super) fn caught_up(&self, next: &Live, serving: &Live) -> bool {
        if next.table == serving.table {
            return next.position() >= serving.position();
        }
        let highest = self
            .db
            .table(&next.tenant, &next.table)
            .map_or(0, |t| t.highest_position());
        next.position() >= highest
    }

    fn promote(&self, next: &Arc<Live>) -> Result<()> {
        match self.projections.promote(next) {
            Ok(Some(replaced)) => {
                tracing::info!(tenant = %next.tenant, projection = %next.name, version = next.spec.version, position = next.position(), "the next version of a projection replaced the serving one");
                self.delete_snapshot_of(replaced);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(Error::internal(format!(
                "could not store the list of projections: {e}"
            ))),
        }
    }
}

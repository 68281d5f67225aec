//! The funnel accumulators: one row-at-a-time `Accumulator` and one
//! `GroupsAccumulator`, both gathering each group's (time, step) events
//! and reporting them through [`FunnelOutput`].

use super::*;

/// What a funnel function reports per group.
#[derive(Debug, Clone)]
pub(crate) enum FunnelOutput {
    /// The level reached (`window_funnel`).
    Level,
    /// The level and each step's time, in this type (`funnel_steps`).
    Steps(DataType),
}

impl FunnelOutput {
    /// The result column for groups whose events are
    /// `events[offsets[g]..offsets[g + 1]]` (each slice is sorted here).
    fn finish(
        &self,
        spec: &FunnelSpec,
        offsets: &[usize],
        events: &mut [(i64, u8)],
    ) -> Result<ArrayRef> {
        let groups = offsets.windows(2).map(|w| (w[0], w[1]));
        match self {
            FunnelOutput::Level => {
                let levels: UInt8Array = groups
                    .map(|(a, b)| Some(spec.level(&mut events[a..b])))
                    .collect();
                Ok(Arc::new(levels))
            }
            FunnelOutput::Steps(time) => {
                let results = groups
                    .map(|(a, b)| spec.walk(&mut events[a..b], true))
                    .collect();
                crate::funnel_steps::build(results, spec.steps, time)
            }
        }
    }
}

/// One group's events.
#[derive(Debug)]
pub(crate) struct FunnelAccumulator {
    spec: FunnelSpec,
    output: FunnelOutput,
    events: Vec<(i64, u8)>,
}

impl FunnelAccumulator {
    pub(crate) fn new(spec: FunnelSpec, output: FunnelOutput) -> Self {
        FunnelAccumulator {
            spec,
            output,
            events: Vec::new(),
        }
    }
}

impl Accumulator for FunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let events = &mut self.events;
        self.spec
            .for_each_event(values, None, |_, t, step| events.push((t, step)))
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut events = std::mem::take(&mut self.events);
        let array = self
            .output
            .finish(&self.spec, &[0, events.len()], &mut events)?;
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.events.capacity() * size_of::<(i64, u8)>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrays = events_to_state(&[0, self.events.len()], &self.events)?;
        arrays
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for_each_state(states, |_, events| self.events.extend(events))
    }
}

/// One event of one group.
#[derive(Debug, Clone, Copy)]
struct Entry {
    t: i64,
    group: u32,
    step: u8,
}

/// Many groups' events, in one list in arrival order. Grouping waits for
/// the end (a counting sort by group), so updates only append: no
/// per-group allocations, and memory is written in order.
#[derive(Debug)]
pub(crate) struct FunnelGroups {
    spec: FunnelSpec,
    output: FunnelOutput,
    entries: Vec<Entry>,
    groups: usize,
}

impl FunnelGroups {
    pub(crate) fn new(spec: FunnelSpec, output: FunnelOutput) -> Self {
        FunnelGroups {
            spec,
            output,
            entries: Vec::new(),
            groups: 0,
        }
    }

    /// Takes the entries of the groups `emit_to` asks for, and how many
    /// groups that is; the groups left are renumbered from 0.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<Entry>, usize) {
        match emit_to {
            EmitTo::All => (
                std::mem::take(&mut self.entries),
                std::mem::take(&mut self.groups),
            ),
            EmitTo::First(n) => {
                let (taken, mut kept): (Vec<Entry>, Vec<Entry>) =
                    self.entries.drain(..).partition(|e| (e.group as usize) < n);
                for e in &mut kept {
                    e.group -= n as u32;
                }
                self.entries = kept;
                self.groups -= n;
                (taken, n)
            }
        }
    }
}

/// Groups `entries` by group (a counting sort that keeps arrival order):
/// group `g`'s events are `events[offsets[g]..offsets[g + 1]]`.
fn by_group(entries: &[Entry], groups: usize) -> (Vec<usize>, Vec<(i64, u8)>) {
    let mut offsets = vec![0usize; groups + 1];
    for e in entries {
        offsets[e.group as usize + 1] += 1;
    }
    for g in 0..groups {
        offsets[g + 1] += offsets[g];
    }
    let mut next = offsets[..groups].to_vec();
    let mut events = vec![(0i64, 0u8); entries.len()];
    for e in entries {
        let at = &mut next[e.group as usize];
        events[*at] = (e.t, e.step);
        *at += 1;
    }
    (offsets, events)
}

/// One bitmask per row, bit i set where condition i is true, and the
/// rows where no condition is NULL (a validity buffer; `None` when all
/// are valid). Reads the conditions a column at a time.
pub(crate) fn condition_masks(
    conds: &[&BooleanArray],
    len: usize,
) -> (Vec<u32>, Option<NullBuffer>) {
    let mut masks = vec![0u32; len];
    let mut valid: Option<NullBuffer> = None;
    for (i, cond) in conds.iter().enumerate() {
        for row in cond.values().set_indices() {
            masks[row] |= 1 << i;
        }
        valid = NullBuffer::union(valid.as_ref(), cond.nulls());
    }
    (masks, valid)
}

/// Whether row `row` is kept by an aggregate's `FILTER (WHERE ...)`: a
/// NULL filter value drops the row, as SQL does.
pub(crate) fn passes_filter(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// Takes the groups `emit_to` asks for out of `groups`.
pub(crate) fn take_groups<T>(groups: &mut Vec<T>, emit_to: EmitTo) -> Vec<T> {
    match emit_to {
        EmitTo::All => std::mem::take(groups),
        EmitTo::First(n) => {
            let rest = groups.split_off(n);
            std::mem::replace(groups, rest)
        }
    }
}

impl GroupsAccumulator for FunnelGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups = self.groups.max(total_num_groups);
        let entries = &mut self.entries;
        self.spec
            .for_each_event(values, opt_filter, |row, t, step| {
                entries.push(Entry {
                    t,
                    group: group_indices[row] as u32,
                    step,
                })
            })
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (entries, groups) = self.take(emit_to);
        let (offsets, mut events) = by_group(&entries, groups);
        drop(entries);
        self.output.finish(&self.spec, &offsets, &mut events)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (entries, groups) = self.take(emit_to);
        let (offsets, events) = by_group(&entries, groups);
        events_to_state(&offsets, &events)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups = self.groups.max(total_num_groups);
        let entries = &mut self.entries;
        for_each_state(values, |row, events| {
            let group = group_indices[row] as u32;
            entries.extend(events.map(|(t, step)| Entry { t, group, step }))
        })
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row is its own group; events arrive in row order.
        let rows = values.first().map_or(0, |v| v.len());
        let mut offsets = vec![0usize; rows + 1];
        let mut events = Vec::new();
        self.spec
            .for_each_event(values, opt_filter, |row, t, step| {
                offsets[row + 1] += 1;
                events.push((t, step));
            })?;
        for r in 0..rows {
            offsets[r + 1] += offsets[r];
        }
        events_to_state(&offsets, &events)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.entries.capacity() * size_of::<Entry>()
    }
}

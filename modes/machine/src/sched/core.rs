//! The scheduler's bookkeeping, as pure code on a clock it is handed (nanoseconds since
//! any origin): which vCPUs hold a host CPU, whom to take one from, credits, caps and
//! boosts. The driver ([`super::HostScheduler`]) calls it under a lock and kicks the
//! vCPUs it names; the tests call it with a fake clock.
//!
//! **What a vCPU is charged.** A vCPU whose thread's CPU clock the driver reads
//! ([`Core::used`]) is charged the CPU time that thread really consumed, whether it held
//! a CPU by the scheduler's grant or not: the build of its next VM, the time it took to
//! stop after a kick, all of it. Holding a grant costs nothing by itself, so a vCPU that
//! Linux ran for less than its grant (other processes on the same cores) keeps the
//! credit it did not use. A vCPU without a meter is charged the time it held a CPU.
//!
//! **What a period hands out.** Each accounting period shares out, by weight, the CPU the
//! vCPUs used in it (Xen hands out P × period, which is what its vCPUs get when it owns
//! the CPUs; a VMM sharing its cores with other processes gets less, and handing out more
//! than there was would leave every vCPU in credit, where weights stop mattering). A
//! vCPU's savings are bounded by one period's allocation (P × period × weight / Σ
//! weights); what it cannot take goes to the others by weight. Credit starts at 0, so
//! after each period the credits sum to about 0 (less what a bound cut, plus debts beyond
//! the floor): a vCPU in credit has used less than its weight's part of what the vCPUs
//! got, one in debt more. Among vCPUs of one priority the one with the most credit runs
//! first, so the shares follow the weights whatever the grants were worth.
//!
//! **Work-conserving or not.** Xen lets a vCPU in debt take a CPU no one else wants. Where
//! Linux gives the vCPU threads unequal parts of the CPUs they hold, that hands one
//! vCPU's loss to the others; [`Core::set_work_conserving`] turns it off.

use contract::SchedulerKind;

/// One vCPU as the scheduler is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuSpec {
    /// Weight (credit scheduler): its part of the host CPUs is weight / Σ weights.
    pub weight: u32,
    /// Cap in percent of one host CPU (credit scheduler; 0: none).
    pub cap: u32,
}

impl Default for VcpuSpec {
    fn default() -> Self {
        VcpuSpec { weight: 1, cap: 0 }
    }
}

/// Where a vCPU is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not (or no longer) taking part.
    Away,
    /// Wants a host CPU.
    Runnable,
    /// Holds a host CPU since this time.
    Running(u64),
    /// Waits for its timer (halted guest): needs no CPU.
    Blocked,
    /// Used up its cap in this accounting period: waits for the next one.
    Parked,
}

/// The credit scheduler's priorities, best first (Xen's BOOST, UNDER, OVER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Woke from a wait with credit left: runs before anyone who did not.
    Boost,
    /// Has credit left (or none, but no debt).
    Under,
    /// In debt: at the end of a slice it gives its CPU to an UNDER vCPU that wants one.
    Over,
}

/// One vCPU's bookkeeping.
#[derive(Debug, Clone)]
struct Vcpu {
    spec: VcpuSpec,
    state: State,
    /// When its current slice began.
    slice_start: u64,
    /// Credit in nanoseconds of CPU.
    credit: i64,
    boost: bool,
    /// CPU time charged in the current accounting period.
    used_in_period: u64,
    /// CPU time granted (held a host CPU) in all.
    ran_ns: u64,
    /// CPU time charged in all.
    used_ns: u64,
    /// CPU time its thread used while it did not hold a host CPU (metered vCPUs).
    overrun_ns: u64,
    /// The last reading of its thread's CPU clock (`None`: not metered, charged the time
    /// it holds a CPU).
    meter: Option<u64>,
    /// Times it was taken off a CPU while it still wanted one.
    preemptions: u64,
    /// Queue position among the runnable (lower: earlier).
    seq: u64,
    /// Wanted a CPU all through the current accounting period (never blocked, parked or
    /// away).
    wanted: bool,
}

/// What a vCPU's bookkeeping says, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuStats {
    /// CPU time the scheduler granted it (it held a host CPU), in nanoseconds.
    pub ran_ns: u64,
    /// CPU time it was charged, in nanoseconds: what its thread consumed if metered,
    /// else the time granted.
    pub used_ns: u64,
    /// CPU time its thread consumed while it held no host CPU (metered vCPUs), in
    /// nanoseconds: builds between runs and the way to the gate after a kick.
    pub overrun_ns: u64,
    /// Times it was preempted.
    pub preemptions: u64,
}

/// The scheduler's state for every vCPU of a host.
#[derive(Debug, Clone)]
pub struct Core {
    kind: SchedulerKind,
    cpus: usize,
    slice_ns: u64,
    period_ns: u64,
    period_start: u64,
    vcpus: Vec<Vcpu>,
    next_seq: u64,
    /// CPU time charged to all vCPUs in the current accounting period.
    period_used: u64,
    /// Whether a vCPU in debt still takes a CPU no one else wants (credit scheduler).
    work_conserving: bool,
}

/// The credit accounting period, in time slices (Xen: 30 ms of accounting, 10 ms ticks).
pub const PERIOD_SLICES: u64 = 3;

impl Core {
    /// A scheduler of `kind` for these vCPUs on `cpus` host CPUs, with time slices of
    /// `slice_ns`; every vCPU starts away.
    pub fn new(kind: SchedulerKind, cpus: usize, slice_ns: u64, specs: &[VcpuSpec]) -> Self {
        let slice_ns = slice_ns.max(1);
        Core {
            kind,
            cpus: cpus.max(1),
            slice_ns,
            period_ns: slice_ns * PERIOD_SLICES,
            period_start: 0,
            vcpus: specs
                .iter()
                .map(|&spec| Vcpu {
                    spec: VcpuSpec {
                        weight: spec.weight.max(1),
                        ..spec
                    },
                    state: State::Away,
                    slice_start: 0,
                    credit: 0,
                    boost: false,
                    used_in_period: 0,
                    ran_ns: 0,
                    used_ns: 0,
                    overrun_ns: 0,
                    meter: None,
                    preemptions: 0,
                    seq: 0,
                    wanted: false,
                })
                .collect(),
            next_seq: 0,
            period_used: 0,
            work_conserving: true,
        }
    }

    /// Credit scheduler: whether a vCPU in debt takes a CPU no one else wants (the
    /// default, Xen's) or, when not, waits for the next accounting period once its debt
    /// passes one accounting period of one CPU, leaving the CPU to the host's other processes. Not
    /// work-conserving, the shares hold where Linux gives the vCPU threads unequal parts
    /// of the CPUs they hold (a host loaded by other processes): a vCPU that holds a CPU
    /// all the time and still gets less than its part keeps the others to what it gets.
    pub fn set_work_conserving(&mut self, on: bool) {
        self.work_conserving = on;
    }

    /// Where vCPU `id` is.
    pub fn state(&self, id: usize) -> State {
        self.vcpus[id].state
    }

    /// Whether vCPU `id` holds a host CPU.
    pub fn running(&self, id: usize) -> bool {
        matches!(self.vcpus[id].state, State::Running(_))
    }

    /// vCPU `id`'s credit, in nanoseconds of CPU.
    pub fn credit(&self, id: usize) -> i64 {
        self.vcpus[id].credit
    }

    /// vCPU `id`'s credit-scheduler priority.
    pub fn priority(&self, id: usize) -> Priority {
        let v = &self.vcpus[id];
        if self.kind != SchedulerKind::Credit {
            Priority::Under
        } else if v.boost {
            Priority::Boost
        } else if v.credit >= 0 {
            Priority::Under
        } else {
            Priority::Over
        }
    }

    /// vCPU `id`'s bookkeeping.
    pub fn stats(&self, id: usize) -> VcpuStats {
        let v = &self.vcpus[id];
        VcpuStats {
            ran_ns: v.ran_ns,
            used_ns: v.used_ns,
            overrun_ns: v.overrun_ns,
            preemptions: v.preemptions,
        }
    }

    /// A reading of vCPU `id`'s thread CPU clock (nanoseconds, any origin, never going
    /// back): the first one starts metering it, each later one charges it what the thread
    /// consumed since the one before. A metered vCPU is no longer charged the time it
    /// holds a CPU. Readings of a vCPU that is away only move the meter.
    pub fn used(&mut self, id: usize, cpu_ns: u64) {
        let v = &mut self.vcpus[id];
        let last = v.meter.replace(cpu_ns.max(v.meter.unwrap_or(0)));
        let Some(last) = last else { return };
        let used = cpu_ns.saturating_sub(last);
        match v.state {
            State::Away => {}
            State::Running(_) => self.charge(id, used),
            _ => {
                self.vcpus[id].overrun_ns += used;
                self.charge(id, used);
            }
        }
    }

    /// vCPU `id`'s thread is gone: no more readings; it is charged the time it holds a
    /// CPU again.
    pub fn unmeter(&mut self, id: usize) {
        self.vcpus[id].meter = None;
    }

    /// vCPU `id` starts taking part; returns the vCPUs to kick.
    pub fn join(&mut self, id: usize, now: u64) -> Vec<usize> {
        if self.vcpus[id].state == State::Away {
            // Owed nothing, owing nothing: credit is what a vCPU is owed of its weight's
            // part of what the vCPUs used since it joined.
            self.vcpus[id].credit = 0;
            self.make_runnable(id);
        }
        self.schedule(now)
    }

    /// vCPU `id` stops taking part (its CPU goes to another).
    pub fn leave(&mut self, id: usize, now: u64) -> Vec<usize> {
        self.account(id, now);
        self.vcpus[id].state = State::Away;
        self.vcpus[id].boost = false;
        self.vcpus[id].wanted = false;
        self.schedule(now)
    }

    /// vCPU `id` waits for its timer: its CPU goes to another.
    pub fn block(&mut self, id: usize, now: u64) -> Vec<usize> {
        if self.vcpus[id].state == State::Away {
            return Vec::new();
        }
        self.account(id, now);
        self.vcpus[id].state = State::Blocked;
        self.vcpus[id].boost = false;
        self.vcpus[id].wanted = false;
        self.schedule(now)
    }

    /// vCPU `id`'s wait is over: it wants a CPU again, boosted under the credit scheduler
    /// if it has credit left (it may take the CPU of one that is not boosted).
    pub fn wake(&mut self, id: usize, now: u64) -> Vec<usize> {
        if self.vcpus[id].state != State::Blocked {
            return Vec::new();
        }
        self.make_runnable(id);
        if self.kind == SchedulerKind::Credit && self.vcpus[id].credit > 0 {
            self.vcpus[id].boost = true;
        }
        self.schedule(now)
    }

    /// The periodic tick: charges the running vCPUs (those without a meter), refills
    /// credits at each accounting period, parks vCPUs over their cap (and, not
    /// work-conserving, those deep in debt while a vCPU they owe wants a CPU), ends
    /// slices. Returns the vCPUs to kick.
    pub fn tick(&mut self, now: u64) -> Vec<usize> {
        for id in 0..self.vcpus.len() {
            self.account(id, now);
        }
        if self.kind == SchedulerKind::Credit && now >= self.period_start + self.period_ns {
            self.period_start = now;
            self.refill();
        }
        let creditor = self.creditor_wants_cpu();
        for id in 0..self.vcpus.len() {
            match self.vcpus[id].state {
                State::Runnable if creditor && self.deep_in_debt(id) => self.park(id),
                // Parked for debt, and no longer owed to anyone: it may run.
                State::Parked if !creditor && !self.over_cap(id) => self.make_runnable(id),
                _ => {}
            }
        }
        // The runnable, best first: each slice that ends goes to the next of them that is
        // at least as good, and only while there is one (no kick for nothing).
        let mut waiting: Vec<usize> = (0..self.vcpus.len())
            .filter(|&i| self.vcpus[i].state == State::Runnable)
            .collect();
        waiting.sort_by_key(|&i| self.rank(i));
        let mut waiting = waiting.into_iter().peekable();
        let mut kicks = Vec::new();
        for id in 0..self.vcpus.len() {
            if !self.running(id) {
                continue;
            }
            if self.over_cap(id) || (creditor && self.deep_in_debt(id)) {
                self.park(id);
                self.vcpus[id].preemptions += 1;
                kicks.push(id);
            } else if now >= self.vcpus[id].slice_start + self.slice_ns {
                // The boost lasts one slice at most.
                self.vcpus[id].boost = false;
                if waiting
                    .next_if(|&w| self.standing(w) <= self.standing(id))
                    .is_some()
                {
                    self.preempt(id);
                    kicks.push(id);
                } else {
                    self.vcpus[id].slice_start = now;
                }
            }
        }
        kicks.extend(self.schedule(now));
        kicks.retain(|&id| !self.running(id));
        kicks.sort_unstable();
        kicks.dedup();
        kicks
    }

    /// The most credit vCPU `id` may save: its weight's part of every host CPU for one
    /// period.
    fn allocation(&self, id: usize) -> u64 {
        let total: u64 = self
            .vcpus
            .iter()
            .enumerate()
            .filter(|(i, v)| *i == id || v.state != State::Away)
            .map(|(_, v)| u64::from(v.spec.weight))
            .sum();
        let capacity = self.period_ns * self.cpus as u64;
        capacity * u64::from(self.vcpus[id].spec.weight) / total.max(1)
    }

    /// A new accounting period: the CPU the vCPUs used in the one that ended shared out
    /// by weight ([`Core::shares`]; debts carried down to one period of every CPU, savings
    /// bounded by one period's allocation), caps reset, parked vCPUs runnable again.
    fn refill(&mut self) {
        let floor = -((self.period_ns * self.cpus as u64) as i64);
        let pool = std::mem::take(&mut self.period_used);
        let gets = self.shares(pool);
        for (id, got) in gets.into_iter().enumerate() {
            if self.vcpus[id].state == State::Away {
                continue;
            }
            let bound = self.allocation(id) as i64;
            let v = &mut self.vcpus[id];
            v.credit = (v.credit + got as i64).clamp(floor, bound.max(floor));
            v.used_in_period = 0;
            if v.state == State::Parked {
                self.make_runnable(id);
            }
            let v = &mut self.vcpus[id];
            v.wanted = matches!(v.state, State::Runnable | State::Running(_));
        }
    }

    /// `pool` nanoseconds of credit shared among the vCPUs taking part by weight, none
    /// given more than lifts it to its allocation; what one cannot take goes to the
    /// others by weight (water-filling). Rounding down loses at most a nanosecond a vCPU.
    /// Not work-conserving, what a vCPU that wanted a CPU all period cannot take is lost:
    /// it did not get its part because Linux gave its thread less, and handing that part
    /// to the others would let them take it after all.
    fn shares(&self, pool: u64) -> Vec<u64> {
        let n = self.vcpus.len();
        let mut gets = vec![0u64; n];
        let room: Vec<u64> = (0..n)
            .map(|id| {
                let bound = self.allocation(id) as i64;
                bound.saturating_sub(self.vcpus[id].credit).max(0) as u64
            })
            .collect();
        let mut open: Vec<usize> = (0..n)
            .filter(|&id| self.vcpus[id].state != State::Away)
            .collect();
        let mut left = pool;
        while left > 0 && !open.is_empty() {
            let weights: u64 = open
                .iter()
                .map(|&id| u64::from(self.vcpus[id].spec.weight))
                .sum();
            let portion = |id: usize| {
                (u128::from(left) * u128::from(self.vcpus[id].spec.weight) / u128::from(weights))
                    as u64
            };
            let full: Vec<usize> = open
                .iter()
                .copied()
                .filter(|&id| room[id] - gets[id] <= portion(id))
                .collect();
            if full.is_empty() {
                for &id in &open {
                    gets[id] += portion(id);
                }
                break;
            }
            let portions: Vec<u64> = full.iter().map(|&id| portion(id)).collect();
            for (&id, portion) in full.iter().zip(portions) {
                let lost = !self.work_conserving && self.vcpus[id].wanted;
                left -= if lost { portion } else { room[id] - gets[id] };
                gets[id] = room[id];
            }
            open.retain(|id| !full.contains(id));
        }
        gets
    }

    /// Whether vCPU `id` is in debt by more than one period of one CPU (not
    /// work-conserving: it waits for the next period while a vCPU it owes wants a CPU).
    fn deep_in_debt(&self, id: usize) -> bool {
        self.kind == SchedulerKind::Credit
            && !self.work_conserving
            && self.vcpus[id].credit < -(self.period_ns as i64)
    }

    /// Whether a vCPU not deep in debt wants a CPU: only then do the ones deep in debt
    /// wait (their debt is to it). Without one they run, or no one would: a period in
    /// which no vCPU runs hands out nothing.
    fn creditor_wants_cpu(&self) -> bool {
        (0..self.vcpus.len()).any(|i| {
            matches!(self.vcpus[i].state, State::Runnable | State::Running(_))
                && !self.deep_in_debt(i)
        })
    }

    fn park(&mut self, id: usize) {
        let v = &mut self.vcpus[id];
        v.state = State::Parked;
        v.boost = false;
        v.wanted = false;
    }

    /// Whether vCPU `id` has used its cap for this period.
    fn over_cap(&self, id: usize) -> bool {
        let v = &self.vcpus[id];
        self.kind == SchedulerKind::Credit
            && v.spec.cap > 0
            && v.used_in_period * 100 >= self.period_ns * u64::from(v.spec.cap)
    }

    /// Counts the CPU vCPU `id` has held since it was last counted, and charges it for
    /// that time if it has no meter.
    fn account(&mut self, id: usize, now: u64) {
        let v = &mut self.vcpus[id];
        if let State::Running(since) = v.state {
            let ran = now.saturating_sub(since);
            v.ran_ns += ran;
            v.state = State::Running(now);
            if v.meter.is_none() {
                self.charge(id, ran);
            }
        }
    }

    fn charge(&mut self, id: usize, ns: u64) {
        let v = &mut self.vcpus[id];
        v.used_ns += ns;
        v.used_in_period += ns;
        v.credit -= ns as i64;
        self.period_used += ns;
    }

    fn make_runnable(&mut self, id: usize) {
        self.vcpus[id].state = State::Runnable;
        self.vcpus[id].seq = self.next_seq;
        self.next_seq += 1;
    }

    fn preempt(&mut self, id: usize) {
        self.vcpus[id].boost = false;
        self.vcpus[id].preemptions += 1;
        self.make_runnable(id);
    }

    /// How much vCPU `id` deserves a CPU (less: more): its priority, then (credit
    /// scheduler) its credit, most first. At the end of a slice the running vCPU gives
    /// its CPU to a waiting one that stands at least as well; among vCPUs of one priority
    /// the one furthest behind its weight's part runs first, so a heavy vCPU that is
    /// still owed CPU keeps its CPU instead of taking turns with light ones that are not.
    fn standing(&self, id: usize) -> (Priority, i64) {
        let credit = if self.kind == SchedulerKind::Credit {
            self.vcpus[id].credit
        } else {
            0
        };
        (self.priority(id), credit.saturating_neg())
    }

    /// [`Core::standing`], then longest waiting.
    fn rank(&self, id: usize) -> (Priority, i64, u64) {
        let (priority, credit) = self.standing(id);
        (priority, credit, self.vcpus[id].seq)
    }

    /// The runnable vCPU to run next: best standing, then longest waiting.
    fn best_waiting(&self) -> Option<usize> {
        (0..self.vcpus.len())
            .filter(|&i| self.vcpus[i].state == State::Runnable)
            .min_by_key(|&i| self.rank(i))
    }

    /// The running vCPU to give up its CPU first: worst priority, then longest running.
    fn worst_running(&self) -> Option<usize> {
        (0..self.vcpus.len())
            .filter(|&i| self.running(i))
            .max_by_key(|&i| {
                (
                    self.priority(i),
                    std::cmp::Reverse(self.vcpus[i].slice_start),
                )
            })
    }

    /// Fills free CPUs, then lets a boosted waiting vCPU take the CPU of the worst running
    /// one that is not boosted (everyone else waits for a slice to end: a kick costs the
    /// kicked vCPU the time it takes to stop, which is CPU its neighbours lose). Returns
    /// the vCPUs preempted (to kick).
    fn schedule(&mut self, now: u64) -> Vec<usize> {
        let cpus = if self.kind == SchedulerKind::Linux {
            usize::MAX
        } else {
            self.cpus
        };
        let mut kicks = Vec::new();
        while let Some(next) = self.best_waiting() {
            let running = self
                .vcpus
                .iter()
                .filter(|v| matches!(v.state, State::Running(_)));
            if running.count() < cpus {
                self.grant(next, now);
                continue;
            }
            match self.worst_running() {
                Some(worst)
                    if self.priority(next) == Priority::Boost
                        && self.priority(worst) != Priority::Boost =>
                {
                    self.account(worst, now);
                    self.preempt(worst);
                    kicks.push(worst);
                    self.grant(next, now);
                }
                _ => break,
            }
        }
        kicks
    }

    fn grant(&mut self, id: usize, now: u64) {
        self.vcpus[id].state = State::Running(now);
        self.vcpus[id].slice_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn specs(weights: &[u32]) -> Vec<VcpuSpec> {
        weights
            .iter()
            .map(|&weight| VcpuSpec { weight, cap: 0 })
            .collect()
    }

    fn running(c: &Core) -> Vec<usize> {
        (0..c.vcpus.len()).filter(|&i| c.running(i)).collect()
    }

    /// Runs every vCPU as CPU-bound for `ms` milliseconds of 1 ms ticks.
    fn spin(c: &mut Core, from: u64, ms: u64) -> u64 {
        let mut now = from;
        for _ in 0..ms {
            now += MS;
            c.tick(now);
        }
        now
    }

    #[test]
    fn a_meter_charges_what_the_thread_consumed_not_what_it_was_granted() {
        let mut c = Core::new(SchedulerKind::Credit, 1, 10 * MS, &specs(&[1, 3]));
        c.join(0, 0);
        c.join(1, 0);
        c.used(0, 5 * MS); // the first reading only sets the meter
        c.used(1, 0);
        assert_eq!(running(&c), [0]);
        assert_eq!(c.credit(0), 0);
        // Granted 4 ms, consumed 1 ms of them (a loaded host): charged 1 ms.
        c.used(0, 6 * MS);
        c.tick(4 * MS);
        assert_eq!(c.credit(0), -(MS as i64));
        assert_eq!(c.priority(0), Priority::Over);
        // vCPU 1 holds no CPU but its thread builds a VM for 2 ms: charged, as overrun.
        c.used(1, 2 * MS);
        assert_eq!(c.credit(1), -2 * MS as i64);
        // A reading that goes back (a clock read before another) charges nothing.
        c.used(0, 5 * MS);
        assert_eq!(c.credit(0), -(MS as i64));
        c.used(0, 7 * MS);
        assert_eq!(c.credit(0), -2 * MS as i64);
        assert_eq!(
            c.stats(0),
            VcpuStats {
                ran_ns: 4 * MS,
                used_ns: 2 * MS,
                overrun_ns: 0,
                preemptions: 0,
            }
        );
        assert_eq!(c.stats(1).overrun_ns, 2 * MS);
        // The period ends at 30 ms: the 4 ms the two consumed are shared out 1:3.
        c.tick(30 * MS);
        assert_eq!(c.credit(0), -2 * MS as i64 + MS as i64);
        assert_eq!(c.credit(1), -2 * MS as i64 + 3 * MS as i64);
        assert_eq!(c.stats(0).ran_ns, 30 * MS);
        // Its slice over, vCPU 0 (in debt) gives the CPU to vCPU 1 (in credit now).
        assert_eq!(running(&c), [1]);
        // Without a meter again: charged the time it holds the CPU.
        c.unmeter(1);
        c.tick(31 * MS);
        assert_eq!(c.credit(1), 0);
    }

    #[test]
    fn a_period_shares_out_what_was_used_and_no_one_saves_beyond_one_allocation() {
        // 2 CPUs, 30 ms periods: allocations 1:1:2 are 15, 15 and 30 ms.
        let mut c = Core::new(SchedulerKind::Credit, 2, 10 * MS, &specs(&[1, 1, 2]));
        for id in 0..3 {
            c.join(id, 0);
            c.used(id, 0);
        }
        c.block(0, 0); // vCPU 0 waits all along
        assert_eq!(running(&c), [1, 2]);
        c.used(1, 24 * MS);
        c.used(2, 16 * MS);
        c.tick(30 * MS);
        // 40 ms used, shared 1:1:2: 10, 10, 20.
        assert_eq!(c.credit(0), 10 * MS as i64);
        assert_eq!(c.credit(1), -14 * MS as i64);
        assert_eq!(c.credit(2), 4 * MS as i64);
        c.used(1, 54 * MS);
        c.used(2, 46 * MS);
        c.tick(60 * MS);
        // 60 ms used: vCPU 0's part (15) would lift it past its allocation (15): it takes
        // 5, and the 10 it cannot take go to the others 1:2.
        assert_eq!(c.credit(0), 15 * MS as i64);
        assert_eq!(
            c.credit(1),
            (-14 - 30 + 15 + 10 / 3) * MS as i64 + MS as i64 / 3
        );
        assert_eq!(
            c.credit(2),
            (4 - 30 + 30 + 6) * MS as i64 + 2 * MS as i64 / 3
        );
        // Only vCPU 1 consumes: what vCPU 2 cannot take (beyond its allocation) goes to
        // vCPU 1, which is not put in debt for CPU no one else wanted.
        let (c1, c2) = (c.credit(1), c.credit(2));
        c.used(1, 200 * MS);
        c.tick(90 * MS);
        assert_eq!(c.credit(0), 15 * MS as i64);
        assert_eq!(c.credit(2), 30 * MS as i64);
        assert_eq!(c.credit(1), c1 - (30 * MS as i64 - c2));
    }

    /// A host in a test: each vCPU's thread consumes `rate_us` of every 1 ms tick while it
    /// holds a CPU (a loaded host gives a granted thread less than all of it), and one
    /// the scheduler kicks goes on for `overrun_ticks` ticks (building its next VM, or on
    /// its way to the gate); threads that want more than the CPUs there are share them.
    struct Sim {
        core: Core,
        cpu: Vec<u64>,
        rate_us: Vec<u64>,
        overrun_ticks: u32,
        overrunning: Vec<u32>,
        metered: bool,
        now: u64,
    }

    impl Sim {
        fn new(weights: &[u32], rate_us: &[u64], overrun_ticks: u32, metered: bool) -> Self {
            let mut core = Core::new(SchedulerKind::Credit, 2, 10 * MS, &specs(weights));
            for id in 0..weights.len() {
                core.join(id, 0);
                if metered {
                    core.used(id, 0);
                }
            }
            Sim {
                core,
                cpu: vec![0; weights.len()],
                rate_us: rate_us.to_vec(),
                overrun_ticks,
                overrunning: vec![0; weights.len()],
                metered,
                now: 0,
            }
        }

        fn run(&mut self, ticks: u64) {
            let n = self.cpu.len();
            for _ in 0..ticks {
                self.now += MS;
                let busy: Vec<usize> = (0..n)
                    .filter(|&i| self.core.running(i) || self.overrunning[i] > 0)
                    .collect();
                for &i in &busy {
                    let full = self.rate_us[i] * 1000;
                    self.cpu[i] += full * 2 / (busy.len() as u64).max(2);
                    if !self.core.running(i) {
                        self.overrunning[i] -= 1;
                    }
                }
                if self.metered {
                    for i in 0..n {
                        self.core.used(i, self.cpu[i]);
                    }
                }
                for k in self.core.tick(self.now) {
                    self.overrunning[k] = self.overrun_ticks;
                }
            }
        }

        /// Each vCPU's part of the CPU all threads consumed, relative to its weight's
        /// part, in thousandths.
        fn ratios(&self, weights: &[u32]) -> Vec<u64> {
            let total: u64 = self.cpu.iter().sum();
            let wsum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            self.cpu
                .iter()
                .zip(weights)
                .map(|(&c, &w)| c * wsum * 1000 / (total * u64::from(w)))
                .collect()
        }
    }

    #[test]
    fn metered_credit_follows_weights_on_a_loaded_host() {
        let w = [1, 1, 2, 4];
        // Every granted thread gets 60 % of its CPU: a period hands out what was used,
        // so weights still decide (handing out two CPUs' worth would leave everyone in
        // credit and share equally).
        let mut sim = Sim::new(&w, &[600; 4], 0, true);
        sim.run(10_000);
        assert_eq!(sim.ratios(&w), [1004, 1004, 1000, 998]);
        // The heavy one keeps its CPU: it gives it up once, at the start.
        assert_eq!(sim.core.stats(3).preemptions, 1);
        // On a quiet host too.
        let mut sim = Sim::new(&w, &[1000; 4], 0, true);
        sim.run(10_000);
        assert_eq!(sim.ratios(&w), [1004, 1004, 1000, 998]);
    }

    #[test]
    fn not_work_conserving_the_shares_hold_where_linux_gives_threads_unequal_parts() {
        let w = [1, 1, 2, 4];
        // Linux gives the heavy one, which holds a CPU all the time, 35 % of it, the
        // others more of theirs: work-conserving, the others take what it cannot.
        let rates = [600, 600, 500, 350];
        let mut sim = Sim::new(&w, &rates, 0, true);
        sim.run(10_000);
        assert_eq!(sim.ratios(&w), [1221, 1221, 1216, 780]);
        // Not work-conserving, the others wait for it: within 3 %.
        let mut sim = Sim::new(&w, &rates, 0, true);
        sim.core.set_work_conserving(false);
        sim.run(10_000);
        assert_eq!(sim.ratios(&w), [1029, 1029, 1015, 977]);
        // A fifth vCPU that waits all along holds no one back (its part is shared out
        // among the others: 9/8 of their parts of 9 weights, within 4 % of it).
        let w5 = [1, 1, 2, 4, 1];
        let mut sim = Sim::new(&w5, &[600, 600, 500, 350, 0], 0, true);
        sim.core.set_work_conserving(false);
        sim.core.block(4, 0);
        sim.run(10_000);
        assert_eq!(sim.ratios(&w5), [1172, 1172, 1156, 1085, 0]);
        // On a quiet host it costs nothing: both CPUs busy all the time.
        let mut sim = Sim::new(&w, &[1000; 4], 0, true);
        sim.core.set_work_conserving(false);
        sim.run(10_000);
        assert_eq!(sim.cpu.iter().sum::<u64>(), 2 * 10_000 * MS);
        assert_eq!(sim.ratios(&w), [1004, 1004, 1000, 998]);
    }

    #[test]
    fn not_work_conserving_vcpus_in_debt_run_when_they_owe_no_one_who_wants_a_cpu() {
        let w = [1, 1, 2, 4];
        let mut sim = Sim::new(&w, &[600, 600, 500, 350], 0, true);
        sim.core.set_work_conserving(false);
        sim.run(3000);
        // The heavy one leaves with the light ones in debt: they are owed to no one now,
        // and with no one running a period would hand out nothing. They run at once.
        let now = sim.now;
        sim.core.leave(3, now);
        let before: Vec<u64> = sim.cpu.clone();
        sim.run(1000);
        let gained: u64 = (0..3).map(|i| sim.cpu[i] - before[i]).sum();
        // Never a tick with both CPUs idle (at least 500 µs a tick); at times one idles
        // while the light ones owe w2, which wants a CPU, more than a period.
        assert_eq!(gained, 908_300_000);
        assert!((0..3).all(|i| sim.cpu[i] > before[i]));
    }

    #[test]
    fn a_kicked_vcpu_pays_for_the_time_it_takes_to_stop() {
        let w = [1, 1, 2, 4];
        // Each kicked thread runs on for 3 ms, slowing the granted ones: metered, those
        // 3 ms are its own; the heavy one cannot win back what it lost beyond its one CPU.
        let mut sim = Sim::new(&w, &[1000; 4], 3, true);
        sim.run(10_000);
        let overrun: u64 = (0..4).map(|i| sim.core.stats(i).overrun_ns).sum();
        let used: u64 = (0..4).map(|i| sim.core.stats(i).used_ns).sum();
        assert_eq!(
            used,
            sim.cpu.iter().sum::<u64>(),
            "every ns consumed is charged"
        );
        assert_eq!(overrun, 1_562_998_440);
        // The light ones pay for their overruns, but the heavy one, which needs a whole
        // CPU, loses what they take from its CPU and cannot win it back: overruns must be
        // short (the fleet keeps them so; 3 ms per kick costs it 8 %).
        assert_eq!(sim.ratios(&w), [1081, 1080, 1077, 920]);
    }

    #[test]
    fn linux_runs_everyone_at_once() {
        let mut c = Core::new(SchedulerKind::Linux, 2, 10 * MS, &specs(&[1, 1, 1, 1]));
        for id in 0..4 {
            assert!(c.join(id, 0).is_empty());
        }
        assert_eq!(running(&c), [0, 1, 2, 3]);
        assert!(c.tick(100 * MS).is_empty());
    }

    #[test]
    fn round_robin_gives_each_a_slice_in_turn() {
        let mut c = Core::new(SchedulerKind::RoundRobin, 2, 10 * MS, &specs(&[1, 1, 1, 1]));
        for id in 0..4 {
            c.join(id, 0);
        }
        assert_eq!(running(&c), [0, 1]);
        assert!(c.tick(9 * MS).is_empty(), "slices not over yet");
        let mut kicks = c.tick(10 * MS);
        kicks.sort_unstable();
        assert_eq!(kicks, [0, 1]);
        assert_eq!(running(&c), [2, 3]);
        c.tick(20 * MS);
        assert_eq!(running(&c), [0, 1]);
        // 4 VMs, 2 CPUs, 400 ms: 200 ms each, exactly.
        spin(&mut c, 20 * MS, 380);
        for id in 0..4 {
            assert_eq!(c.stats(id).ran_ns, 200 * MS, "vCPU {id}");
        }
    }

    #[test]
    fn round_robin_keeps_running_a_vcpu_no_one_waits_for() {
        let mut c = Core::new(SchedulerKind::RoundRobin, 2, 10 * MS, &specs(&[1, 1]));
        c.join(0, 0);
        c.join(1, 0);
        assert!(spin(&mut c, 0, 100) > 0);
        assert_eq!(c.stats(0).preemptions, 0);
        assert_eq!(c.stats(1).ran_ns, 100 * MS);
    }

    #[test]
    fn credit_shares_follow_weights() {
        let weights = [1, 1, 2, 4];
        let mut c = Core::new(SchedulerKind::Credit, 2, 10 * MS, &specs(&weights));
        for id in 0..4 {
            c.join(id, 0);
        }
        let total_ms = 3000;
        spin(&mut c, 0, total_ms);
        let total: u64 = (0..4).map(|i| c.stats(i).ran_ns).sum();
        assert_eq!(total, 2 * total_ms * MS, "both CPUs busy all the time");
        for (id, w) in weights.iter().enumerate() {
            let share = c.stats(id).ran_ns as f64 / total as f64;
            let target = f64::from(*w) / 8.0;
            assert!(
                (share - target).abs() < 0.01,
                "vCPU {id}: share {share:.4}, target {target:.4}"
            );
        }
    }

    #[test]
    fn credit_is_work_conserving_over_credit() {
        // The heavy one waits in hlt: the light one runs all the time, over its credit.
        let mut c = Core::new(SchedulerKind::Credit, 1, 10 * MS, &specs(&[1, 100]));
        c.join(0, 0);
        c.join(1, 0);
        c.block(1, 0);
        spin(&mut c, 0, 305);
        assert_eq!(c.stats(0).ran_ns, 305 * MS);
        assert_eq!(c.stats(0).preemptions, 0);
        assert!(c.credit(0) < 0);
        assert_eq!(c.priority(0), Priority::Over);
    }

    #[test]
    fn a_cap_parks_a_vcpu_for_the_rest_of_its_period() {
        let mut c = Core::new(
            SchedulerKind::Credit,
            2,
            10 * MS,
            &[
                VcpuSpec { weight: 1, cap: 25 },
                VcpuSpec { weight: 1, cap: 0 },
            ],
        );
        c.join(0, 0);
        c.join(1, 0);
        spin(&mut c, 0, 3000);
        // 25 % of one CPU, to the tick: 100 periods of 30 ms, 7.5 ms each, charged at
        // 1 ms ticks (8 ms a period).
        let ran = c.stats(0).ran_ns;
        assert!((750 * MS..=800 * MS).contains(&ran), "{ran}");
        assert_eq!(c.stats(1).ran_ns, 3000 * MS, "the other is not held back");
    }

    #[test]
    fn a_vcpu_waking_with_credit_is_boosted_and_preempts_at_once() {
        let mut c = Core::new(SchedulerKind::Credit, 1, 10 * MS, &specs(&[1, 1, 1]));
        for id in 0..3 {
            c.join(id, 0);
        }
        assert_eq!(running(&c), [0]);
        // vCPU 0 halts at once: the others share the CPU; the period's 30 ms are shared
        // out, 10 ms each, and vCPU 0, which used none, is owed its 10.
        c.block(0, 0);
        spin(&mut c, 0, 32);
        assert_eq!(c.credit(0), 10 * MS as i64);
        let holder = running(&c);
        assert_eq!(holder.len(), 1);
        let kicks = c.wake(0, 33 * MS);
        assert_eq!(kicks, holder, "the boosted vCPU takes the CPU at once");
        assert_eq!(c.priority(0), Priority::Boost);
        assert_eq!(running(&c), [0]);
        // Round-robin would have made it wait behind the others (and a slice).
        let mut rr = Core::new(SchedulerKind::RoundRobin, 1, 10 * MS, &specs(&[1, 1, 1]));
        for id in 0..3 {
            rr.join(id, 0);
        }
        rr.block(0, 2 * MS);
        assert!(rr.wake(0, 3 * MS).is_empty());
        assert_eq!(rr.state(0), State::Runnable);
    }

    #[test]
    fn a_vcpu_in_debt_wakes_without_boost() {
        let mut c = Core::new(SchedulerKind::Credit, 1, 10 * MS, &specs(&[1, 1]));
        c.join(0, 0);
        c.join(1, 0);
        assert_eq!(running(&c), [0]);
        // Its slice over, in debt, it gives the CPU to the other, which owes nothing.
        assert_eq!(c.tick(10 * MS), [0]);
        assert_eq!(c.credit(0), -10 * MS as i64);
        assert_eq!(running(&c), [1]);
        c.block(0, 15 * MS);
        assert!(c.wake(0, 16 * MS).is_empty());
        assert_eq!(c.priority(0), Priority::Over);
        assert_eq!(running(&c), [1]);
    }

    #[test]
    fn leaving_frees_the_cpu_and_blocked_vcpus_need_none() {
        let mut c = Core::new(SchedulerKind::RoundRobin, 1, 10 * MS, &specs(&[1, 1, 1]));
        for id in 0..3 {
            c.join(id, 0);
        }
        assert_eq!(running(&c), [0]);
        c.leave(0, MS);
        assert_eq!(running(&c), [1]);
        c.block(1, 2 * MS);
        assert_eq!(running(&c), [2]);
        assert_eq!(c.stats(0).ran_ns, MS);
        assert_eq!(c.stats(1).ran_ns, MS);
        // Joining again starts at the back.
        c.join(0, 3 * MS);
        assert_eq!(c.state(0), State::Runnable);
    }
}

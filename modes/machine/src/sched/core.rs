//! The scheduler's bookkeeping, as pure code on a clock it is handed (nanoseconds since
//! any origin): which vCPUs hold a host CPU, whom to take one from, credits, caps and
//! boosts. The driver ([`super::HostScheduler`]) calls it under a lock and kicks the
//! vCPUs it names; the tests call it with a fake clock.

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
    /// Has credit left.
    Under,
    /// Has used its credit: runs only where no one else wants the CPU.
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
    /// CPU time used in the current accounting period.
    used_in_period: u64,
    /// CPU time used in all.
    ran_ns: u64,
    /// Times it was taken off a CPU while it still wanted one.
    preemptions: u64,
    /// Queue position among the runnable (lower: earlier).
    seq: u64,
}

/// What a vCPU's bookkeeping says, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuStats {
    /// CPU time the scheduler granted it, in nanoseconds.
    pub ran_ns: u64,
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
                    preemptions: 0,
                    seq: 0,
                })
                .collect(),
            next_seq: 0,
        }
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
        } else if v.credit > 0 {
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
            preemptions: v.preemptions,
        }
    }

    /// vCPU `id` starts taking part; returns the vCPUs to kick.
    pub fn join(&mut self, id: usize, now: u64) -> Vec<usize> {
        if self.vcpus[id].state == State::Away {
            // A first allocation as if every vCPU of the host were there: the order in
            // which they join does not matter.
            let total: u64 = self.vcpus.iter().map(|v| u64::from(v.spec.weight)).sum();
            let capacity = self.period_ns * self.cpus as u64;
            self.vcpus[id].credit =
                (capacity * u64::from(self.vcpus[id].spec.weight) / total.max(1)) as i64;
            self.make_runnable(id);
        }
        self.schedule(now)
    }

    /// vCPU `id` stops taking part (its CPU goes to another).
    pub fn leave(&mut self, id: usize, now: u64) -> Vec<usize> {
        self.account(id, now);
        self.vcpus[id].state = State::Away;
        self.vcpus[id].boost = false;
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

    /// The periodic tick: charges the running vCPUs, refills credits at each accounting
    /// period, parks vCPUs over their cap, ends slices. Returns the vCPUs to kick.
    pub fn tick(&mut self, now: u64) -> Vec<usize> {
        for id in 0..self.vcpus.len() {
            self.account(id, now);
        }
        if self.kind == SchedulerKind::Credit && now >= self.period_start + self.period_ns {
            self.period_start = now;
            self.refill();
        }
        // The runnable, best first: each slice that ends goes to the next of them that is
        // at least as good, and only while there is one (no kick for nothing).
        let mut waiting: Vec<usize> = (0..self.vcpus.len())
            .filter(|&i| self.vcpus[i].state == State::Runnable)
            .collect();
        waiting.sort_by_key(|&i| (self.priority(i), self.vcpus[i].seq));
        let mut waiting = waiting.into_iter().peekable();
        let mut kicks = Vec::new();
        for id in 0..self.vcpus.len() {
            if !self.running(id) {
                continue;
            }
            if self.over_cap(id) {
                self.vcpus[id].state = State::Parked;
                self.vcpus[id].boost = false;
                self.vcpus[id].preemptions += 1;
                kicks.push(id);
            } else if now >= self.vcpus[id].slice_start + self.slice_ns {
                // The boost lasts one slice at most.
                self.vcpus[id].boost = false;
                if waiting
                    .next_if(|&w| self.priority(w) <= self.priority(id))
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

    /// The credit one accounting period gives vCPU `id`: its weight's part of every host
    /// CPU for the period.
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

    /// A new accounting period: credits by weight (debts carried, savings bounded by one
    /// period's allocation), caps reset, parked vCPUs runnable again.
    fn refill(&mut self) {
        let bound = (self.period_ns * self.cpus as u64) as i64;
        for id in 0..self.vcpus.len() {
            if self.vcpus[id].state == State::Away {
                continue;
            }
            let share = self.allocation(id) as i64;
            let v = &mut self.vcpus[id];
            v.credit = (v.credit + share).clamp(-bound, share);
            v.used_in_period = 0;
            if v.state == State::Parked {
                self.make_runnable(id);
            }
        }
    }

    /// Whether vCPU `id` has used its cap for this period.
    fn over_cap(&self, id: usize) -> bool {
        let v = &self.vcpus[id];
        self.kind == SchedulerKind::Credit
            && v.spec.cap > 0
            && v.used_in_period * 100 >= self.period_ns * u64::from(v.spec.cap)
    }

    /// Charges vCPU `id` for the CPU it has held since it was last charged.
    fn account(&mut self, id: usize, now: u64) {
        let v = &mut self.vcpus[id];
        if let State::Running(since) = v.state {
            let ran = now.saturating_sub(since);
            v.ran_ns += ran;
            v.used_in_period += ran;
            v.credit -= ran as i64;
            v.state = State::Running(now);
        }
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

    /// The runnable vCPU to run next: best priority, then longest waiting.
    fn best_waiting(&self) -> Option<usize> {
        (0..self.vcpus.len())
            .filter(|&i| self.vcpus[i].state == State::Runnable)
            .min_by_key(|&i| (self.priority(i), self.vcpus[i].seq))
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

    /// Fills free CPUs, then lets a waiting vCPU of strictly better priority take the CPU
    /// of the worst running one. Returns the vCPUs preempted (to kick).
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
                Some(worst) if self.priority(next) < self.priority(worst) => {
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
        spin(&mut c, 0, 300);
        assert_eq!(c.stats(0).ran_ns, 300 * MS);
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
        // vCPU 0 halts: 1 runs; 0's timer fires while 1 has most of its slice left.
        c.block(0, 2 * MS);
        assert_eq!(running(&c), [1]);
        assert_eq!(c.state(0), State::Blocked);
        let kicks = c.wake(0, 3 * MS);
        assert_eq!(kicks, [1], "the boosted vCPU takes the CPU at once");
        assert_eq!(c.priority(0), Priority::Boost);
        assert_eq!(running(&c), [0]);
        // Round-robin would have made it wait behind 2 (and 1's slice).
        let mut rr = Core::new(SchedulerKind::RoundRobin, 1, 10 * MS, &specs(&[1, 1, 1]));
        for id in 0..3 {
            rr.join(id, 0);
        }
        rr.block(0, 2 * MS);
        assert!(rr.wake(0, 3 * MS).is_empty());
        assert_eq!(rr.state(0), State::Runnable);
    }

    #[test]
    fn a_vcpu_out_of_credit_wakes_without_boost() {
        let mut c = Core::new(SchedulerKind::Credit, 1, 100 * MS, &specs(&[1, 100]));
        c.join(0, 0);
        c.join(1, 0);
        assert_eq!(running(&c), [0]);
        // Its allocation is 3 ms a period: after 20 ms it is over, and the one with
        // credit takes the CPU at the tick.
        assert_eq!(c.tick(20 * MS), [0]);
        assert_eq!(c.priority(0), Priority::Over);
        c.block(0, 21 * MS);
        assert!(c.wake(0, 22 * MS).is_empty());
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

//! Per-talker jitter buffer: packets in by RTP sequence number, one frame out
//! per mixer tick.
//!
//! Talkers on mobile links deliver packets late, reordered and with gaps. The
//! buffer holds `target_depth` frames before playout starts, then hands the
//! mixer exactly one decision per 20 ms tick: a packet, a lost packet (with
//! the next packet when it is already here, so its in-band FEC can recover
//! the gap) or nothing (underrun: the talker is silent, in DTX, or gone).
//!
//! The depth adapts: a packet that arrives after its playout time deepens
//! the buffer by one frame (playout stalls one tick, concealed), up to 160 ms;
//! ten seconds without a late packet make it one frame shallower again (a
//! frame is skipped). A talker on a jittery 3G link thus trades a little
//! latency for continuity, and a good link keeps the minimum.
//!
//! Storage is a fixed ring of packet slots allocated when the talker joins;
//! inserting and playing out never allocate. Sequence numbers are str0m's
//! extended (64-bit, rollover-free) ones.

use crate::opus::MAX_PACKET;

/// Ring size: 16 × 20 ms = 320 ms of reordering window.
const CAPACITY: usize = 16;
/// Empty ticks after which playout stops and the next packet primes again.
const UNDERRUN_RESET_TICKS: u32 = 3;
/// The deepest the buffer adapts to: 8 × 20 ms.
const MAX_DEPTH: usize = CAPACITY / 2;
/// Ticks without a late packet before the depth shrinks by one frame (10 s).
const CALM_TICKS_TO_SHRINK: u32 = 500;

/// What the mixer should play for this tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The expected packet arrived.
    Packet(&'a [u8]),
    /// The expected packet is missing but later ones arrived: conceal, or
    /// recover from `next`'s in-band FEC when the very next packet is here.
    Lost { next: Option<&'a [u8]> },
    /// Nothing to play: not primed yet, or the talker went quiet.
    Silent,
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub late: u64,
    pub duplicate: u64,
    pub oversized: u64,
    pub lost: u64,
    /// Packets dropped because the buffer ran too deep (sender clock faster).
    pub dropped_for_latency: u64,
    pub resets: u64,
    /// Ticks of playout held back to deepen the buffer.
    pub stretched: u64,
}

struct Slot {
    seq: Option<u64>,
    len: usize,
    data: Box<[u8; MAX_PACKET]>,
}

pub struct JitterBuffer {
    slots: Vec<Slot>,
    /// Next sequence number to play; `None` while priming.
    next: Option<u64>,
    /// One past the last sequence number played (or given up on): anything
    /// below is late even while priming again after an underrun, so a
    /// straggler or duplicate of a played packet is never played twice.
    floor: Option<u64>,
    buffered: usize,
    /// The least depth; the configured one.
    min_depth: usize,
    /// The current depth, between `min_depth` and [`MAX_DEPTH`].
    target_depth: usize,
    /// Playout ticks still to hold back after the depth grew.
    stall: usize,
    calm_ticks: u32,
    empty_ticks: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// `target_depth` frames (≥ 1) are held before playout starts.
    pub fn new(target_depth: usize) -> Self {
        let slots = (0..CAPACITY)
            .map(|_| Slot {
                seq: None,
                len: 0,
                data: Box::new([0; MAX_PACKET]),
            })
            .collect();
        let target_depth = target_depth.clamp(1, MAX_DEPTH);
        Self {
            slots,
            next: None,
            floor: None,
            buffered: 0,
            min_depth: target_depth,
            target_depth,
            stall: 0,
            calm_ticks: 0,
            empty_ticks: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Number of packets waiting.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The depth playout currently aims for, in frames.
    pub fn target_depth(&self) -> usize {
        self.target_depth
    }

    pub fn insert(&mut self, seq: u64, payload: &[u8]) {
        if payload.len() > MAX_PACKET {
            self.stats.oversized += 1;
            return;
        }
        if seq == u64::MAX {
            // Nothing could follow it (str0m's extended numbers start below
            // 2¹⁶ and grow by one a packet: never reached); refusing it keeps
            // the arithmetic below overflow-free.
            self.stats.late += 1;
            return;
        }
        if let Some(next) = self.next {
            if seq < next {
                self.stats.late += 1;
                self.deepen();
                return;
            }
            if seq >= next.saturating_add(CAPACITY as u64) {
                // The stream jumped (sender restarted or a long outage): start over.
                self.reset();
                self.stats.resets += 1;
            }
        } else if self.floor.is_some_and(|floor| seq < floor) {
            // Priming after an underrun: already played or given up on. Not
            // a sign of jitter (the talker paused), so the depth stays.
            self.stats.late += 1;
            return;
        } else if let Some(lowest) = self.lowest_buffered()
            && (seq.saturating_add(CAPACITY as u64) <= lowest
                || seq >= lowest.saturating_add(CAPACITY as u64))
        {
            // Priming, and this packet is nowhere near the ones waiting: start over.
            self.reset();
            self.stats.resets += 1;
        }
        let slot = &mut self.slots[(seq % CAPACITY as u64) as usize];
        match slot.seq {
            Some(s) if s == seq => {
                self.stats.duplicate += 1;
                return;
            }
            Some(_) => {} // an older packet never played: overwritten.
            None => self.buffered += 1,
        }
        slot.seq = Some(seq);
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
        self.stats.received += 1;
    }

    /// One decision per mixer tick.
    pub fn pop(&mut self) -> Playout<'_> {
        let next = match self.next {
            Some(next) => next,
            None if self.buffered >= self.target_depth => {
                let lowest = self
                    .lowest_buffered()
                    .expect("buffered > 0 has a lowest seq");
                self.next = Some(lowest);
                lowest
            }
            None => return Playout::Silent,
        };
        if self.buffered == 0 {
            self.empty_ticks += 1;
            if self.empty_ticks >= UNDERRUN_RESET_TICKS {
                self.next = None;
                return Playout::Silent;
            }
            self.advance(next);
            return Playout::Lost { next: None };
        }
        self.empty_ticks = 0;
        if self.stall > 0 {
            // Hold playout back one tick: the buffer gains a frame of depth.
            self.stall -= 1;
            self.stats.stretched += 1;
            return Playout::Lost { next: None };
        }
        self.relax();
        let next = self.skip_if_too_deep(next);
        self.advance(next);
        let idx = self.index_of(next);
        if let Some(i) = idx {
            self.slots[i].seq = None;
            self.buffered -= 1;
            let slot = &self.slots[i];
            return Playout::Packet(&slot.data[..slot.len]);
        }
        self.stats.lost += 1;
        match next.checked_add(1).and_then(|n| self.index_of(n)) {
            Some(i) => Playout::Lost {
                next: Some(&self.slots[i].data[..self.slots[i].len]),
            },
            None => Playout::Lost { next: None },
        }
    }

    /// A packet came too late: aim one frame deeper.
    fn deepen(&mut self) {
        self.calm_ticks = 0;
        if self.target_depth < MAX_DEPTH {
            self.target_depth += 1;
            self.stall += 1;
        }
    }

    /// After a calm period, aim one frame shallower (`skip_if_too_deep` then
    /// drops a frame).
    fn relax(&mut self) {
        self.calm_ticks += 1;
        if self.calm_ticks >= CALM_TICKS_TO_SHRINK && self.target_depth > self.min_depth {
            self.target_depth -= 1;
            self.calm_ticks = 0;
        }
    }

    /// When the sender's clock runs faster than ours the buffer creeps deeper;
    /// drop the oldest frame so latency stays near the target.
    fn skip_if_too_deep(&mut self, next: u64) -> u64 {
        if self.buffered <= self.target_depth + 4 {
            return next;
        }
        if let Some(i) = self.index_of(next) {
            self.slots[i].seq = None;
            self.buffered -= 1;
        }
        self.stats.dropped_for_latency += 1;
        next.saturating_add(1)
    }

    /// `seq` was decided this tick: play `seq + 1` next, never `seq` again.
    fn advance(&mut self, seq: u64) {
        let after = seq.saturating_add(1);
        self.next = Some(after);
        self.floor = Some(after);
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        let i = (seq % CAPACITY as u64) as usize;
        (self.slots[i].seq == Some(seq)).then_some(i)
    }

    fn lowest_buffered(&self) -> Option<u64> {
        self.slots.iter().filter_map(|s| s.seq).min()
    }

    fn reset(&mut self) {
        for s in &mut self.slots {
            s.seq = None;
        }
        self.buffered = 0;
        self.next = None;
        self.empty_ticks = 0;
        self.stall = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn played(p: Playout<'_>) -> Option<u8> {
        match p {
            Playout::Packet(d) => Some(d[0]),
            _ => None,
        }
    }

    #[test]
    fn holds_target_depth_then_plays_in_order() {
        let mut jb = JitterBuffer::new(2);
        jb.insert(100, &[100]);
        assert_eq!(jb.pop(), Playout::Silent);
        jb.insert(101, &[101]);
        assert_eq!(played(jb.pop()), Some(100));
        jb.insert(102, &[102]);
        assert_eq!(played(jb.pop()), Some(101));
        assert_eq!(played(jb.pop()), Some(102));
    }

    #[test]
    fn reorders() {
        let mut jb = JitterBuffer::new(3);
        for seq in [11u64, 10, 13, 12] {
            jb.insert(seq, &[seq as u8]);
        }
        let out: Vec<_> = (0..4).map(|_| played(jb.pop())).collect();
        assert_eq!(out, vec![Some(10), Some(11), Some(12), Some(13)]);
    }

    #[test]
    fn loss_offers_the_next_packet_for_fec() {
        let mut jb = JitterBuffer::new(2);
        jb.insert(1, &[1]);
        jb.insert(3, &[3]);
        jb.insert(4, &[4]);
        assert_eq!(played(jb.pop()), Some(1));
        assert_eq!(
            jb.pop(),
            Playout::Lost {
                next: Some(&[3][..])
            }
        );
        assert_eq!(played(jb.pop()), Some(3));
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new(1);
        jb.insert(5, &[5]);
        jb.insert(5, &[5]);
        assert_eq!(played(jb.pop()), Some(5));
        jb.insert(4, &[4]);
        jb.insert(6, &[6]);
        assert_eq!(
            jb.pop(),
            Playout::Lost { next: None },
            "the late packet deepens the buffer"
        );
        assert_eq!(played(jb.pop()), Some(6));
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().duplicate, 1);
    }

    #[test]
    fn underrun_conceals_briefly_then_goes_silent_and_reprimes() {
        let mut jb = JitterBuffer::new(1);
        jb.insert(1, &[1]);
        assert_eq!(played(jb.pop()), Some(1));
        assert_eq!(jb.pop(), Playout::Lost { next: None });
        assert_eq!(jb.pop(), Playout::Lost { next: None });
        assert_eq!(jb.pop(), Playout::Silent);
        jb.insert(50, &[50]);
        assert_eq!(played(jb.pop()), Some(50));
    }

    #[test]
    fn a_straggler_after_an_underrun_is_not_played_again() {
        // Found by the property test below: once playout stopped after an
        // underrun, a late copy of a played packet primed and played again.
        let mut jb = JitterBuffer::new(1);
        jb.insert(7, &[7]);
        assert_eq!(played(jb.pop()), Some(7));
        for _ in 0..UNDERRUN_RESET_TICKS {
            jb.pop();
        }
        jb.insert(7, &[7]);
        jb.insert(5, &[5]);
        assert_eq!(jb.pop(), Playout::Silent);
        assert_eq!(jb.stats().late, 2);
        jb.insert(12, &[12]);
        assert_eq!(played(jb.pop()), Some(12));
    }

    #[test]
    fn a_jump_in_sequence_restarts_the_buffer() {
        let mut jb = JitterBuffer::new(1);
        jb.insert(1, &[1]);
        jb.pop();
        jb.insert(10_000, &[7]);
        assert_eq!(played(jb.pop()), Some(7));
        assert_eq!(jb.stats().resets, 1);
    }

    #[test]
    fn a_fast_sender_does_not_grow_latency_without_bound() {
        let mut jb = JitterBuffer::new(2);
        let mut seq = 0u64;
        for _ in 0..100 {
            // Two packets arrive for every tick.
            jb.insert(seq, &[0]);
            jb.insert(seq + 1, &[0]);
            seq += 2;
            jb.pop();
            assert!(jb.buffered() <= CAPACITY);
        }
        assert!(jb.buffered() <= 2 + 5, "buffered {}", jb.buffered());
        assert!(jb.stats().dropped_for_latency > 0);
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut jb = JitterBuffer::new(1);
        jb.insert(1, &[0; MAX_PACKET + 1]);
        assert_eq!(jb.stats().oversized, 1);
        assert_eq!(jb.pop(), Playout::Silent);
    }

    #[test]
    fn late_packets_deepen_the_buffer_and_calm_shrinks_it() {
        let mut jb = JitterBuffer::new(2);
        jb.insert(0, &[0]);
        jb.insert(1, &[1]);
        assert_eq!(played(jb.pop()), Some(0));
        assert_eq!(played(jb.pop()), Some(1));
        // Packet 2 is missing at its time, then arrives late.
        assert_eq!(jb.pop(), Playout::Lost { next: None });
        jb.insert(2, &[2]);
        assert_eq!(jb.target_depth(), 3);
        jb.insert(3, &[3]);
        jb.insert(4, &[4]);
        assert_eq!(jb.pop(), Playout::Lost { next: None }, "one tick held back");
        assert_eq!(played(jb.pop()), Some(3));
        assert_eq!(jb.stats().stretched, 1);
        for seq in 5..5 + u64::from(CALM_TICKS_TO_SHRINK) + 10 {
            jb.insert(seq, &[0]);
            jb.pop();
        }
        assert_eq!(
            jb.target_depth(),
            2,
            "ten calm seconds bring the depth back"
        );
    }

    #[test]
    fn depth_never_exceeds_the_maximum() {
        let mut jb = JitterBuffer::new(2);
        jb.insert(100, &[0]);
        jb.insert(101, &[0]);
        jb.pop();
        for late in 0..50 {
            jb.insert(late, &[0]);
        }
        assert_eq!(jb.target_depth(), MAX_DEPTH);
    }
}

/// Property: whatever arrives (duplicates, reordering, gaps, huge jumps
/// either way, sequence numbers near `u64::MAX`), what the buffer yields is
/// strictly increasing in sequence number and never more than its ring.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at `base + offset` (offset may be negative: reordered/late).
        Insert(i64),
        /// Jump the base far away (sender restart, long outage).
        Jump(u64),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (-20i64..40).prop_map(Op::Insert),
            1 => any::<u64>().prop_map(Op::Jump),
            1 => (0u64..100_000).prop_map(Op::Jump),
            5 => Just(Op::Pop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn never_yields_out_of_order(
            depth in 0usize..12,
            start in prop_oneof![any::<u64>(), 0u64..1000, (u64::MAX - 64)..=u64::MAX],
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut jb = JitterBuffer::new(depth);
            let mut base = start;
            let mut last: Option<u64> = None;
            for op in ops {
                match op {
                    Op::Insert(offset) => {
                        let seq = base.saturating_add_signed(offset);
                        jb.insert(seq, &seq.to_be_bytes());
                        base = base.max(seq);
                    }
                    Op::Jump(to) => base = to,
                    Op::Pop => {
                        let (played, fec) = match jb.pop() {
                            Playout::Packet(d) => (Some(seq_of(d)), None),
                            Playout::Lost { next } => (None, next.map(seq_of)),
                            Playout::Silent => (None, None),
                        };
                        if let Some(seq) = played {
                            prop_assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
                            last = Some(seq);
                        }
                        if let (Some(next), Some(l)) = (fec, last) {
                            prop_assert!(next > l, "FEC from {next} after {l} played");
                        }
                    }
                }
                prop_assert!(jb.buffered() <= CAPACITY);
                prop_assert!(jb.target_depth() <= MAX_DEPTH);
            }
        }
    }

    fn seq_of(payload: &[u8]) -> u64 {
        u64::from_be_bytes(payload.try_into().expect("payloads are 8-byte seqs"))
    }
}

//! Sorted sets as Redis keeps them: a skip list ordered by (score, member) whose links carry
//! spans, so that inserting, removing, finding a rank and finding the member at a rank are all
//! O(log n) and a range is O(log n + m), beside a map member → score for O(1) `ZSCORE`.
//!
//! Hand-written: the maintained ordered-map crates (std's `BTreeMap`, `indexmap`) do not answer
//! rank queries, and the crates that do are unmaintained or key on `Ord` types only (a score is
//! an `f64`). Nodes live in one `Vec` with a free list and link by index, so there is no
//! `unsafe` and no pointer juggling; the algorithm is Pugh's, as in Redis's `t_zset.c`.
//!
//! Laid out for memory (issue 14: within 1.5× of Redis per member): members are
//! `CompactBytes` (inline up to 22 bytes), a link is two `u32`s (a set is far from 4 billion
//! members), and a node holds its lowest link itself, so the three nodes in four that have only
//! that one need no allocation; the member is kept twice (map key and node), which inline costs
//! 24 bytes and spares the map a level of indirection.

use bytes::Bytes;
use indexmap::IndexMap;

use super::compact::CompactBytes;

const MAX_LEVEL: usize = 32;
const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

#[derive(Debug, Clone, Copy)]
struct Link {
    forward: u32,
    /// How many nodes this link skips over, counting the one it leads to.
    span: u32,
}

const UNLINKED: Link = Link {
    forward: NIL,
    span: 0,
};

#[derive(Debug, Clone)]
struct Node {
    member: CompactBytes,
    score: f64,
    backward: u32,
    /// The link on level 0, which every node has.
    first: Link,
    /// The links on levels 1 and up (empty, so unallocated, for most nodes).
    upper: Box<[Link]>,
}

impl Node {
    fn new(member: CompactBytes, score: f64, level: usize) -> Node {
        Node {
            member,
            score,
            backward: NIL,
            first: UNLINKED,
            upper: vec![UNLINKED; level - 1].into_boxed_slice(),
        }
    }

    fn link(&self, level: usize) -> &Link {
        match level {
            0 => &self.first,
            _ => &self.upper[level - 1],
        }
    }

    fn link_mut(&mut self, level: usize) -> &mut Link {
        match level {
            0 => &mut self.first,
            _ => &mut self.upper[level - 1],
        }
    }
}

/// Whether `(score, member)` sorts before `(other_score, other)`.
fn before(score: f64, member: &[u8], other_score: f64, other: &[u8]) -> bool {
    score < other_score || (score == other_score && member < other)
}

/// The skip list: nodes by index, node 0 is the head.
#[derive(Debug, Clone)]
struct SkipList {
    nodes: Vec<Node>,
    free: Vec<u32>,
    level: usize,
    len: usize,
    tail: u32,
}

impl Default for SkipList {
    fn default() -> SkipList {
        SkipList {
            nodes: vec![Node::new(CompactBytes::default(), 0.0, MAX_LEVEL)],
            free: Vec::new(),
            level: 1,
            len: 0,
            tail: NIL,
        }
    }
}

fn random_level() -> usize {
    let mut level = 1;
    while level < MAX_LEVEL && crate::state::commands::random_below(4) == 0 {
        level += 1;
    }
    level
}

impl SkipList {
    fn link(&self, node: u32, level: usize) -> Link {
        *self.nodes[node as usize].link(level)
    }

    fn link_mut(&mut self, node: u32, level: usize) -> &mut Link {
        self.nodes[node as usize].link_mut(level)
    }

    fn node(&self, node: u32) -> &Node {
        &self.nodes[node as usize]
    }

    /// The last node before `(score, member)` on each level.
    fn predecessors(&self, score: f64, member: &[u8]) -> ([u32; MAX_LEVEL], [usize; MAX_LEVEL]) {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0usize; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            rank[i] = if i + 1 == self.level { 0 } else { rank[i + 1] };
            loop {
                let link = self.link(x, i);
                if link.forward != NIL && {
                    let next = self.node(link.forward);
                    before(next.score, &next.member, score, member)
                } {
                    rank[i] += link.span as usize;
                    x = link.forward;
                } else {
                    break;
                }
            }
            update[i] = x;
        }
        (update, rank)
    }

    /// Inserts a member that is not in the list.
    fn insert(&mut self, score: f64, member: CompactBytes) {
        let (mut update, mut rank) = self.predecessors(score, &member);
        let level = random_level();
        if level > self.level {
            for i in self.level..level {
                rank[i] = 0;
                update[i] = HEAD;
                self.link_mut(HEAD, i).span = self.len as u32;
            }
            self.level = level;
        }
        let node = Node::new(member, score, level);
        let x = match self.free.pop() {
            Some(index) => {
                self.nodes[index as usize] = node;
                index
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        for i in 0..level {
            let previous = self.link(update[i], i);
            let skipped = (rank[0] - rank[i]) as u32;
            *self.link_mut(x, i) = Link {
                forward: previous.forward,
                span: previous.span - skipped,
            };
            *self.link_mut(update[i], i) = Link {
                forward: x,
                span: skipped + 1,
            };
        }
        for (i, &node) in update.iter().enumerate().take(self.level).skip(level) {
            self.link_mut(node, i).span += 1;
        }
        self.nodes[x as usize].backward = if update[0] == HEAD { NIL } else { update[0] };
        match self.link(x, 0).forward {
            NIL => self.tail = x,
            next => self.nodes[next as usize].backward = x,
        }
        self.len += 1;
    }

    /// Removes `(score, member)`; whether it was there.
    fn remove(&mut self, score: f64, member: &[u8]) -> bool {
        let (update, _) = self.predecessors(score, member);
        let x = self.link(update[0], 0).forward;
        if x == NIL || self.node(x).score != score || *self.node(x).member != *member {
            return false;
        }
        for (i, &node) in update.iter().enumerate().take(self.level) {
            let link = self.link(node, i);
            if link.forward == x {
                let removed = self.link(x, i);
                *self.link_mut(node, i) = Link {
                    forward: removed.forward,
                    span: link.span + removed.span - 1,
                };
            } else {
                self.link_mut(node, i).span -= 1;
            }
        }
        let backward = self.node(x).backward;
        match self.link(x, 0).forward {
            NIL => self.tail = backward,
            next => self.nodes[next as usize].backward = backward,
        }
        while self.level > 1 && self.link(HEAD, self.level - 1).forward == NIL {
            self.level -= 1;
        }
        self.len -= 1;
        let freed = &mut self.nodes[x as usize];
        freed.member = CompactBytes::default();
        freed.upper = Box::default();
        self.free.push(x);
        true
    }

    /// The 0-based rank of `(score, member)`, if it is in the list.
    fn rank(&self, score: f64, member: &[u8]) -> Option<usize> {
        let mut x = HEAD;
        let mut rank = 0;
        for i in (0..self.level).rev() {
            loop {
                let link = self.link(x, i);
                if link.forward == NIL {
                    break;
                }
                let next = self.node(link.forward);
                if before(next.score, &next.member, score, member)
                    || (next.score == score && *next.member == *member)
                {
                    rank += link.span as usize;
                    x = link.forward;
                } else {
                    break;
                }
            }
            if x != HEAD && self.node(x).score == score && *self.node(x).member == *member {
                return Some(rank - 1);
            }
        }
        None
    }

    /// The node at 0-based `rank`.
    fn at_rank(&self, rank: usize) -> Option<u32> {
        let target = rank.checked_add(1)?;
        let mut x = HEAD;
        let mut traversed = 0;
        for i in (0..self.level).rev() {
            loop {
                let link = self.link(x, i);
                if link.forward != NIL && traversed + link.span as usize <= target {
                    traversed += link.span as usize;
                    x = link.forward;
                } else {
                    break;
                }
            }
            if traversed == target {
                return Some(x);
            }
        }
        None
    }

    /// The first node for which `reached` holds (monotone in the order), with its rank.
    fn first_where(&self, reached: impl Fn(f64, &[u8]) -> bool) -> Option<(u32, usize)> {
        let (x, rank) = self.walk_while(|score, member| !reached(score, member));
        match self.link(x, 0).forward {
            NIL => None,
            next => Some((next, rank)),
        }
    }

    /// The last node for which `within` holds (true up to some point in the order), with its
    /// rank.
    fn last_where(&self, within: impl Fn(f64, &[u8]) -> bool) -> Option<(u32, usize)> {
        let (x, rank) = self.walk_while(within);
        (x != HEAD).then(|| (x, rank - 1))
    }

    /// Walks from the head as far as `advance` holds for the next node (monotone in the
    /// order): the last node passed (`HEAD` if none) and the count of nodes passed.
    fn walk_while(&self, advance: impl Fn(f64, &[u8]) -> bool) -> (u32, usize) {
        let mut x = HEAD;
        let mut rank = 0;
        for i in (0..self.level).rev() {
            loop {
                let link = self.link(x, i);
                if link.forward != NIL && {
                    let next = self.node(link.forward);
                    advance(next.score, &next.member)
                } {
                    rank += link.span as usize;
                    x = link.forward;
                } else {
                    break;
                }
            }
        }
        (x, rank)
    }
}

/// A score bound of `ZRANGEBYSCORE` and the like: `(1` is exclusive.
#[derive(Debug, Clone, Copy)]
pub struct ScoreBound {
    pub value: f64,
    pub exclusive: bool,
}

/// A member bound of `ZRANGEBYLEX` and the like: `-`, `+`, `[a`, `(a`.
#[derive(Debug, Clone)]
pub enum LexBound {
    Min,
    Max,
    Inclusive(Bytes),
    Exclusive(Bytes),
}

/// A range of members, by score or by member.
#[derive(Debug, Clone)]
pub enum Range {
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

impl Range {
    fn above_min(&self, score: f64, member: &[u8]) -> bool {
        match self {
            Range::Score(min, _) => {
                if min.exclusive {
                    score > min.value
                } else {
                    score >= min.value
                }
            }
            Range::Lex(min, _) => match min {
                LexBound::Min => true,
                LexBound::Max => false,
                LexBound::Inclusive(bound) => member >= &bound[..],
                LexBound::Exclusive(bound) => member > &bound[..],
            },
        }
    }

    fn below_max(&self, score: f64, member: &[u8]) -> bool {
        match self {
            Range::Score(_, max) => {
                if max.exclusive {
                    score < max.value
                } else {
                    score <= max.value
                }
            }
            Range::Lex(_, max) => match max {
                LexBound::Min => false,
                LexBound::Max => true,
                LexBound::Inclusive(bound) => member <= &bound[..],
                LexBound::Exclusive(bound) => member < &bound[..],
            },
        }
    }
}

/// Estimated bookkeeping bytes per member (skip-list node, links, map slot, score): about 115
/// for a member kept inline (measured: `ONLY=memory bench/state.sh`).
const MEMBER_OVERHEAD: usize = 112;

/// A sorted set.
#[derive(Debug, Clone, Default)]
pub struct ZSet {
    scores: IndexMap<CompactBytes, f64>,
    list: SkipList,
    cost: usize,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The estimated bytes the members hold.
    pub fn cost(&self) -> usize {
        self.cost
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score (adding it if new); its previous score.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        match self.scores.get_mut(member) {
            Some(current) => {
                let old = *current;
                if old != score {
                    *current = score;
                    let (stored, _) = self.scores.get_key_value(member).expect("just found");
                    let stored = stored.clone();
                    self.list.remove(old, member);
                    self.list.insert(score, stored);
                }
                Some(old)
            }
            None => {
                let member = CompactBytes::new(member);
                self.cost += member.len() + MEMBER_OVERHEAD;
                self.scores.insert(member.clone(), score);
                self.list.insert(score, member);
                None
            }
        }
    }

    /// Removes `member`; its score if it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let score = self.scores.swap_remove(member)?;
        self.list.remove(score, member);
        self.cost = self.cost.saturating_sub(member.len() + MEMBER_OVERHEAD);
        Some(score)
    }

    /// `member`'s 0-based rank from the lowest score (from the highest if `reverse`).
    pub fn rank(&self, member: &[u8], reverse: bool) -> Option<usize> {
        let score = self.score(member)?;
        let rank = self.list.rank(score, member)?;
        Some(if reverse { self.len() - 1 - rank } else { rank })
    }

    /// The member and score at 0-based `rank` from the lowest score.
    pub fn at_rank(&self, rank: usize) -> Option<(&CompactBytes, f64)> {
        let node = self.list.node(self.list.at_rank(rank)?);
        Some((&node.member, node.score))
    }

    /// Members from rank `start` to `end` inclusive (from the lowest; walking down from `end`
    /// if `reverse`), both below `len`.
    pub fn by_rank(&self, start: usize, end: usize, reverse: bool) -> Vec<(Bytes, f64)> {
        let mut found = Vec::new();
        if start > end || end >= self.len() {
            return found;
        }
        let (first, step_back) = if reverse {
            (self.list.at_rank(end), true)
        } else {
            (self.list.at_rank(start), false)
        };
        let mut x = first.unwrap_or(NIL);
        let mut left = end - start + 1;
        while x != NIL && left > 0 {
            let node = self.list.node(x);
            found.push((node.member.to_bytes(), node.score));
            x = if step_back {
                node.backward
            } else {
                node.first.forward
            };
            left -= 1;
        }
        found
    }

    /// The ranks (from the lowest) of the first and last members in `range`, if any is.
    pub fn range_ranks(&self, range: &Range) -> Option<(usize, usize)> {
        let (_, first) = self
            .list
            .first_where(|score, member| range.above_min(score, member))?;
        let (_, last) = self
            .list
            .last_where(|score, member| range.below_max(score, member))?;
        (first <= last).then_some((first, last))
    }

    /// How many members are in `range`.
    pub fn count(&self, range: &Range) -> usize {
        self.range_ranks(range)
            .map_or(0, |(first, last)| last - first + 1)
    }

    /// Every member and score, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (&CompactBytes, f64)> + '_ {
        let mut x = self.list.link(HEAD, 0).forward;
        std::iter::from_fn(move || {
            if x == NIL {
                return None;
            }
            let node = self.list.node(x);
            x = node.first.forward;
            Some((&node.member, node.score))
        })
    }

    /// The member at map position `index` (for `ZSCAN`'s cursor), with its score.
    pub fn at_position(&self, index: usize) -> Option<(&CompactBytes, f64)> {
        self.scores
            .get_index(index)
            .map(|(member, score)| (member, *score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_ranges_stay_exact_through_inserts_updates_and_removals() {
        let mut zset = ZSet::default();
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        for round in 0..3000u64 {
            let member = format!("m{}", round * 7919 % 500).into_bytes();
            let score = (round * 31 % 97) as i64;
            if round % 3 == 0 {
                zset.remove(&member);
                model.retain(|(_, m)| *m != member);
            } else {
                zset.insert(&member, score as f64);
                model.retain(|(_, m)| *m != member);
                model.push((score, member));
            }
        }
        model.sort();
        assert_eq!(zset.len(), model.len());
        let listed: Vec<(i64, Vec<u8>)> = zset
            .iter()
            .map(|(member, score)| (score as i64, member.to_vec()))
            .collect();
        assert_eq!(listed, model);
        for (rank, (score, member)) in model.iter().enumerate() {
            assert_eq!(zset.rank(member, false), Some(rank));
            let (at, at_score) = zset.at_rank(rank).unwrap();
            assert_eq!((at.as_ref(), at_score), (&member[..], *score as f64));
        }
        let range = Range::Score(
            ScoreBound {
                value: 10.0,
                exclusive: true,
            },
            ScoreBound {
                value: 50.0,
                exclusive: false,
            },
        );
        let expected = model.iter().filter(|(s, _)| *s > 10 && *s <= 50).count();
        assert_eq!(zset.count(&range), expected);
        assert_eq!(zset.at_rank(model.len()), None);
    }
}

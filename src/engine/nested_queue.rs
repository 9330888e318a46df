//! Which runs of an experiment copy may start now: a child only once its parent's copy is
//! there (so that it is nested under it), and never when its parent failed (copied now, it
//! could not be nested; a re-run copies both). Items in flight at once start in the order of
//! `copy_experiment::parents_first`, so the work goes in waves by nesting depth, but a child
//! need not wait for its whole wave: only for its parent. Pure logic.

use super::copy_experiment::RunSummary;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Started,
    Copied,
    Failed,
}

/// What may happen next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Start run `index`.
    Start(usize),
    /// Run `index` is not attempted: its parent (the id given) failed. It counts as failed.
    Blocked(usize, String),
    /// Every run left waits for its parent, which is in flight.
    Wait,
    /// Every run was started or blocked.
    Empty,
}

pub struct NestedQueue {
    runs: Vec<RunSummary>,
    state: Vec<State>,
    /// The index of each run, to find a run's parent among those selected.
    index: HashMap<String, usize>,
    /// Runs before this one are all past waiting.
    first_waiting: usize,
}

impl NestedQueue {
    /// `runs` in `parents_first` order.
    pub fn new(runs: Vec<RunSummary>) -> NestedQueue {
        let index = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.run_id.clone(), i))
            .collect();
        NestedQueue {
            state: vec![State::Waiting; runs.len()],
            runs,
            index,
            first_waiting: 0,
        }
    }

    pub fn run(&self, index: usize) -> &RunSummary {
        &self.runs[index]
    }

    pub fn next_step(&mut self) -> Next {
        while self
            .state
            .get(self.first_waiting)
            .is_some_and(|s| *s != State::Waiting)
        {
            self.first_waiting += 1;
        }
        for i in self.first_waiting..self.runs.len() {
            if self.state[i] != State::Waiting {
                continue;
            }
            match self.parent_state(i) {
                None | Some(State::Copied) => {
                    self.state[i] = State::Started;
                    return Next::Start(i);
                }
                Some(State::Failed) => {
                    self.state[i] = State::Failed;
                    let parent = self.runs[i].parent_id.clone().unwrap_or_default();
                    return Next::Blocked(i, parent);
                }
                Some(State::Waiting | State::Started) => {}
            }
        }
        match self.first_waiting < self.runs.len() {
            true => Next::Wait,
            false => Next::Empty,
        }
    }

    /// Records how run `index`, started earlier, ended.
    pub fn finished(&mut self, index: usize, copied: bool) {
        self.state[index] = match copied {
            true => State::Copied,
            false => State::Failed,
        };
    }

    /// Whether no run waits any more (each was started or blocked).
    pub fn exhausted(&self) -> bool {
        self.state[self.first_waiting.min(self.state.len())..]
            .iter()
            .all(|s| *s != State::Waiting)
    }

    /// The state of the run's parent, when the parent is among the selected runs (and is not
    /// the run itself: a loop of parent tags must not block a run forever).
    fn parent_state(&self, i: usize) -> Option<State> {
        let parent = self.runs[i].parent_id.as_ref()?;
        let &p = self.index.get(parent)?;
        (p != i && p < i).then_some(self.state[p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, parent: Option<&str>) -> RunSummary {
        RunSummary {
            run_id: id.into(),
            parent_id: parent.map(str::to_string),
            start_time: 0,
        }
    }

    #[test]
    fn children_start_once_their_parent_is_copied_without_waiting_for_the_wave() {
        let mut q = NestedQueue::new(vec![
            run("a", None),
            run("b", None),
            run("a1", Some("a")),
            run("b1", Some("b")),
        ]);
        assert_eq!(q.next_step(), Next::Start(0));
        assert_eq!(q.next_step(), Next::Start(1));
        assert_eq!(q.next_step(), Next::Wait, "children wait for their parents");
        q.finished(1, true);
        assert_eq!(
            q.next_step(),
            Next::Start(3),
            "b's child need not wait for a"
        );
        assert_eq!(q.next_step(), Next::Wait);
        assert!(!q.exhausted());
        q.finished(0, true);
        assert_eq!(q.next_step(), Next::Start(2));
        assert_eq!(q.next_step(), Next::Empty);
        assert!(q.exhausted());
    }

    #[test]
    fn the_descendants_of_a_failed_run_are_blocked() {
        let mut q = NestedQueue::new(vec![
            run("a", None),
            run("a1", Some("a")),
            run("a11", Some("a1")),
            run("orphan", Some("not-selected")),
        ]);
        assert_eq!(q.next_step(), Next::Start(0));
        assert_eq!(
            q.next_step(),
            Next::Start(3),
            "a parent outside the selection"
        );
        q.finished(0, false);
        assert_eq!(q.next_step(), Next::Blocked(1, "a".into()));
        assert_eq!(q.next_step(), Next::Blocked(2, "a1".into()));
        assert_eq!(q.next_step(), Next::Empty);
    }

    #[test]
    fn a_loop_of_parent_tags_blocks_nothing_forever() {
        // parents_first keeps such runs in some order; the later one waits for the earlier.
        let mut q = NestedQueue::new(vec![run("x", Some("y")), run("y", Some("x"))]);
        assert_eq!(q.next_step(), Next::Start(0));
        q.finished(0, true);
        assert_eq!(q.next_step(), Next::Start(1));
        assert_eq!(q.next_step(), Next::Empty);
    }
}

//! The engine's loop: inputs taken in arrival order, handed to the core piece by piece once
//! their signatures are done, the outputs carried out after each round; and the stop.

use std::time::Duration;

use gridchan_channel::Input;
use tokio::sync::{mpsc, oneshot};

use crate::links::Inbound;
use crate::writer::Written;

use super::precompute::{pieces, Work, PIECE_INPUTS};
use super::{Control, Engine, Report, Taken, MAX_BATCH_INPUTS};

impl<S: super::EngineStore> Engine<S> {
    pub(super) async fn run(
        mut self,
        mut control: mpsc::Receiver<Control>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut written: mpsc::UnboundedReceiver<Written>,
    ) -> Option<oneshot::Sender<()>> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        self.refresh_memberships();
        let mut taken: Vec<Taken> = Vec::new();
        // Pieces of input whose signatures the pool is checking and making, in arrival order.
        let mut flight: std::collections::VecDeque<(Vec<Taken>, Work)> = Default::default();
        loop {
            let front_running = matches!(flight.front(), Some((_, Work::Running(_))));
            let round_deadline = self.rounds.next_deadline();
            let book_deadline = self.markets.next_deadline();
            // The core says when it next has something to do on its own; the 1 s tick is for
            // the engine's own housekeeping.
            let core_wait = self
                .node
                .poll_timeout()
                .map(|at| Duration::from_millis(at.saturating_sub((self.clock)())));
            tokio::select! {
                c = control.recv() => match c {
                    Some(c) => taken.push(Taken::Control(c)),
                    None => return self.shut_down().await,
                },
                i = inbound.recv() => match i {
                    Some(i) => taken.push(Taken::Inbound(i)),
                    None => return self.shut_down().await,
                },
                Some(w) = written.recv() => self.on_written(w),
                done = async {
                    match flight.front_mut() {
                        Some((_, Work::Running(rx))) => rx.await,
                        _ => unreachable!("awaited only while the front piece runs"),
                    }
                }, if front_running => {
                    let done = done.expect("the worker pool runs every job it is given");
                    flight.front_mut().expect("a front piece").1 = Work::Done(done);
                }
                _ = async {
                    match round_deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => self.on_round_deadlines(),
                _ = async {
                    match book_deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => self.on_book_deadline(),
                _ = async {
                    match core_wait {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => self.node.handle(Input::Tick {
                    now_ms: (self.clock)(),
                }),
                _ = tick.tick() => {
                    self.node.handle(Input::Tick {
                        now_ms: (self.clock)(),
                    });
                    self.flush_trades();
                    self.retry_frozen();
                    self.refresh_priority();
                    self.refresh_memberships();
                }
            }
            // Take whatever else is already waiting: the persists of a whole burst then go to
            // the writer as one batch (one transaction, one fsync).
            while let Ok(w) = written.try_recv() {
                self.on_written(w);
            }
            for _ in 0..MAX_BATCH_INPUTS {
                match inbound.try_recv() {
                    Ok(i) => taken.push(Taken::Inbound(i)),
                    Err(_) => match control.try_recv() {
                        Ok(c) => taken.push(Taken::Control(c)),
                        Err(_) => break,
                    },
                }
            }
            // New input goes to the pool at once, in pieces: the pool checks and makes their
            // signatures while this thread goes on serving the connections and hands earlier
            // pieces to the core and the writer.
            for piece in pieces(std::mem::take(&mut taken), PIECE_INPUTS) {
                if piece.is_empty() {
                    continue;
                }
                let jobs = self.jobs(&piece);
                let work = if flight.iter().any(|(_, w)| matches!(w, Work::Running(_))) {
                    Work::Waiting(jobs)
                } else {
                    self.start(jobs)
                };
                flight.push_back((piece, work));
            }
            // Pieces are handled in order, each once its signatures are done: the core then
            // finds each result instead of computing it on this one thread.
            while let Some(done) = flight.front_mut().and_then(|(_, work)| work.ready()) {
                let (piece, _) = flight.pop_front().expect("a front piece");
                // One piece at a time on the pool, so that pieces finish in order.
                if let Some((_, work)) = flight
                    .iter_mut()
                    .find(|(_, w)| matches!(w, Work::Waiting(_)))
                {
                    if let Work::Waiting(jobs) = std::mem::replace(work, Work::Done(Vec::new())) {
                        *work = self.start(jobs);
                    }
                }
                let ahead = self.precomputed(done);
                for t in piece {
                    match t {
                        Taken::Control(c) => self.on_control(c, &ahead),
                        Taken::Inbound(i) => self.on_inbound(i, &ahead),
                    }
                }
            }
            // The outputs of the pieces handled, of a write's acknowledgement or of the tick.
            // Nothing else waits: write here, at once, instead of paying two thread hops on a
            // lone update's path. In a burst, the writer takes the batch and the engine goes on
            // with the next inputs meanwhile.
            // The orders a market node took in them, durable in one transaction, then their
            // receipts.
            self.flush_receipts();
            let idle = flight.is_empty() && inbound.is_empty() && control.is_empty();
            self.drain(idle);
            if self.stopping.is_some() {
                return self.shut_down().await;
            }
        }
    }

    /// A batch of records is durable (its outputs may go), or could not be written.
    pub(super) fn on_written(&mut self, w: Written) {
        let through = match &w {
            Written::Durable(last) => Some(*last),
            Written::Failed { updates, .. } => updates.last().copied(),
        };
        if through >= self.writing {
            self.writing = None;
        }
        match w {
            Written::Durable(last) => self.node.handle(Input::Persisted(last)),
            Written::Failed { updates, reason } => {
                let _ = self.reports.send(Report::StoreFailed(reason));
                for update in updates {
                    self.node.handle(Input::PersistFailed(update));
                }
            }
        }
    }

    /// Asked to stop, or every handle is gone: write what is left, close the endpoint (its port
    /// is free again for a restart) and tell the peers.
    ///
    /// Input that arrived after a stop is not handled, and what waited for the last writes is
    /// not sent: as after a crash, nothing signed is lost, and the peers catch up when they
    /// reconnect.
    ///
    /// Returns the answer owed to a `stop`, for after the runtime is gone.
    pub(super) async fn shut_down(&mut self) -> Option<oneshot::Sender<()>> {
        self.flush_trades();
        self.writer.finish();
        self.endpoint.shut_down(Duration::from_secs(1)).await;
        self.stopping.take()
    }

    /// Hands the interval history still waiting for a batch to the writer.
    pub(super) fn flush_trades(&mut self) {
        self.writer.write_trades(std::mem::take(&mut self.trades));
    }
}

//! The signature pre-pass: a burst's costly signature work (recovering who signed what came
//! in, signing what the core will answer) done on the process's worker pool ahead of the core,
//! and handed to it with the input as [`Precomputed`].

use gridchan_channel::{
    Message, Precomputed, Presigned, PresignedOne, Recovered, RecoveredOne, Signature, Signer,
};
use tokio::sync::oneshot;

use crate::links::Inbound;

use super::{Control, Engine, Taken, MIN_PARALLEL_JOBS};

/// A signature to check or to make ahead, for [`Engine::jobs`].
pub(super) enum Job {
    Recover([u8; 32], Signature),
    Sign([u8; 32]),
}

pub(super) enum Done {
    Recovered(RecoveredOne),
    Signed(PresignedOne),
}

/// A piece's signatures: made already, or being made on the pool.
pub(super) enum Work {
    Waiting(Vec<Job>),
    Done(Vec<Done>),
    Running(oneshot::Receiver<Vec<Done>>),
}

impl Work {
    /// The piece's signatures, if they are done (taken: call once).
    pub(super) fn ready(&mut self) -> Option<Vec<Done>> {
        match self {
            Work::Done(done) => Some(std::mem::take(done)),
            Work::Running(rx) => rx.try_recv().ok(),
            Work::Waiting(_) => None,
        }
    }
}

/// The inputs of a burst handled as one piece (see [`Engine::run`]). With input going to the
/// pool as it arrives, the size hardly matters: in 5 interleaved runs each of `bench gateway
/// --channels 1000`, pieces of 128, 256, 384 and 1,000 gave medians of 0.70, 0.69, 0.69 and
/// 0.69 of the signing limit.
pub(super) const PIECE_INPUTS: usize = 384;

/// Splits a burst into pieces of about `chunk` inputs each (an interval's readings split too),
/// in order.
pub(super) fn pieces(taken: Vec<Taken>, chunk: usize) -> Vec<Vec<Taken>> {
    let inputs = |t: &Taken| match t {
        Taken::Control(Control::Readings(readings)) => readings.len(),
        _ => 1,
    };
    // A lone update, or any burst that fits: one piece, nothing moved.
    if taken.iter().map(inputs).sum::<usize>() <= chunk {
        return vec![taken];
    }
    let mut out: Vec<Vec<Taken>> = vec![Vec::new()];
    let mut size = 0;
    for t in taken {
        match t {
            Taken::Control(Control::Readings(readings)) if readings.len() > 1 => {
                let mut rest = readings;
                while !rest.is_empty() {
                    if size >= chunk {
                        out.push(Vec::new());
                        size = 0;
                    }
                    let take = rest.len().min(chunk - size);
                    let tail = rest.split_off(take);
                    size += rest.len();
                    out.last_mut()
                        .expect("one")
                        .push(Taken::Control(Control::Readings(rest)));
                    rest = tail;
                }
            }
            t => {
                if size >= chunk {
                    out.push(Vec::new());
                    size = 0;
                }
                size += 1;
                out.last_mut().expect("one").push(t);
            }
        }
    }
    out
}

/// The process's pool for the signatures of bursts, one thread per core, shared by every engine
/// of the process (named, so that profiles and `top` tell its threads apart).
fn crypto_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("gridchan-crypto-{i}"))
            .build()
            .expect("the worker pool starts")
    })
}

impl Job {
    fn run(&self, signer: &Signer) -> Done {
        match self {
            Job::Recover(digest, sig) => Done::Recovered(Recovered::one(digest, sig)),
            Job::Sign(digest) => Done::Signed(signer.presign_one(digest)),
        }
    }
}

impl<S: super::EngineStore> Engine<S> {
    /// The costly parts of a piece of a burst, for the process's worker pool: recovering the
    /// signers of the proposals and countersignatures, making our countersignatures of the
    /// proposals (used only if the core decides to countersign), and signing the proposals an
    /// interval's readings will make. One pool for every engine of the process: its threads
    /// share the cores without making stragglers of each other.
    pub(super) fn jobs(&self, taken: &[Taken]) -> Vec<Job> {
        let mut jobs = Vec::new();
        for t in taken {
            if let Taken::Control(Control::Readings(readings)) = t {
                // The proposals these readings will make: signed ahead too.
                for (channel, reading) in readings {
                    if let Some(d) = self.node.preview_proposal(channel, reading) {
                        jobs.push(Job::Sign(d));
                    }
                }
                continue;
            }
            let Taken::Inbound(Inbound::Message(_, message)) = t else {
                continue;
            };
            match message {
                Ok(Message::Propose(p)) => {
                    let digest = p.state.digest();
                    jobs.push(Job::Recover(digest, p.sig));
                    jobs.push(Job::Sign(digest));
                }
                Ok(Message::Countersign(c)) => {
                    if let Some(d) = self.node.proposal_digest(&c.channel_id) {
                        jobs.push(Job::Recover(d, c.sig));
                    }
                }
                _ => {}
            }
        }
        jobs
    }

    /// Starts `jobs` on the pool (a handful are done here at once).
    pub(super) fn start(&self, jobs: Vec<Job>) -> Work {
        use rayon::prelude::*;
        if jobs.len() < MIN_PARALLEL_JOBS {
            let signer = self.node.signer();
            return Work::Done(jobs.iter().map(|job| job.run(signer)).collect());
        }
        let (tx, rx) = oneshot::channel();
        let signer = self.pool_signer.clone();
        crypto_pool().spawn(move || {
            let done = jobs
                .par_iter()
                .with_min_len(4)
                .map(|job| job.run(&signer))
                .collect();
            let _ = tx.send(done);
        });
        Work::Running(rx)
    }

    /// The work done ahead that the core consults for a piece, once its signatures are done.
    pub(super) fn precomputed(&self, done: Vec<Done>) -> Precomputed {
        let signer = self.node.signer();
        let mut recovered = Vec::new();
        let mut signed = Vec::new();
        for d in done {
            match d {
                Done::Recovered(r) => recovered.push(r),
                Done::Signed(s) => signed.push(s),
            }
        }
        Precomputed::new(
            Recovered::collect(recovered),
            Presigned::collect(signer, signed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::{ChannelId, IntervalReading};

    fn readings(n: usize) -> Taken {
        let reading = IntervalReading::selling(
            gridchan_channel::IntervalIndex(1),
            gridchan_channel::WattHours(1),
        );
        Taken::Control(Control::Readings(vec![(ChannelId([0; 32]), reading); n]))
    }

    /// What a piece holds, in order: the number of readings of each input (0 for others).
    fn shape(piece: &[Taken]) -> Vec<usize> {
        piece
            .iter()
            .map(|t| match t {
                Taken::Control(Control::Readings(r)) => r.len(),
                _ => 0,
            })
            .collect()
    }

    fn shapes(burst: Vec<Taken>) -> Vec<Vec<usize>> {
        pieces(burst, 384).iter().map(|p| shape(p)).collect()
    }

    #[test]
    fn a_burst_is_cut_into_pieces_in_order_and_an_intervals_readings_with_it() {
        let (reply, _) = oneshot::channel();
        let burst = vec![
            readings(1_000),
            Taken::Control(Control::Channels(reply)),
            readings(10),
        ];
        assert_eq!(shapes(burst), vec![vec![384], vec![384], vec![232, 0, 10]]);
        // A lone input is one piece.
        assert_eq!(shapes(vec![readings(1)]), vec![vec![1]]);
    }
}

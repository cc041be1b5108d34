//! Replay buffers: transitions stored as flat `f32` arrays (struct of arrays), a ring of fixed
//! capacity that grows on demand up to it, sampled uniformly into reusable batches.
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// A ring buffer of transitions `(s, a, r, s', terminated)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayBuffer {
    obs_dim: usize,
    act_dim: usize,
    capacity: usize,
    /// Index the next transition is written to once the buffer is full.
    head: usize,
    obs: Vec<f32>,
    act: Vec<f32>,
    rew: Vec<f32>,
    next_obs: Vec<f32>,
    terminated: Vec<f32>,
}

/// A sampled batch, row-major `[size, dim]` arrays ready to become tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub obs: Vec<f32>,
    pub act: Vec<f32>,
    pub rew: Vec<f32>,
    pub next_obs: Vec<f32>,
    /// 1.0 where the transition ended the episode by termination (no bootstrap), else 0.0.
    pub terminated: Vec<f32>,
}

impl ReplayBuffer {
    pub fn new(capacity: usize, obs_dim: usize, act_dim: usize) -> Self {
        assert!(capacity > 0, "replay capacity must be positive");
        ReplayBuffer {
            obs_dim,
            act_dim,
            capacity,
            head: 0,
            obs: Vec::new(),
            act: Vec::new(),
            rew: Vec::new(),
            next_obs: Vec::new(),
            terminated: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rew.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rew.is_empty()
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    pub fn act_dim(&self) -> usize {
        self.act_dim
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores one transition, overwriting the oldest once full.
    pub fn push(
        &mut self,
        obs: &[f64],
        act: &[f64],
        reward: f64,
        next_obs: &[f64],
        terminated: bool,
    ) {
        debug_assert_eq!(obs.len(), self.obs_dim);
        debug_assert_eq!(act.len(), self.act_dim);
        debug_assert_eq!(next_obs.len(), self.obs_dim);
        let term = if terminated { 1.0 } else { 0.0 };
        if self.len() < self.capacity {
            self.obs.extend(obs.iter().map(|&v| v as f32));
            self.act.extend(act.iter().map(|&v| v as f32));
            self.rew.push(reward as f32);
            self.next_obs.extend(next_obs.iter().map(|&v| v as f32));
            self.terminated.push(term);
        } else {
            let i = self.head;
            let (o, a) = (self.obs_dim, self.act_dim);
            write_row(&mut self.obs, i, o, obs);
            write_row(&mut self.act, i, a, act);
            self.rew[i] = reward as f32;
            write_row(&mut self.next_obs, i, o, next_obs);
            self.terminated[i] = term;
            self.head = (self.head + 1) % self.capacity;
        }
    }

    /// Fills `batch` with `size` transitions drawn uniformly with replacement.
    pub fn sample_into<R: Rng>(&self, rng: &mut R, size: usize, batch: &mut Batch) {
        assert!(!self.is_empty(), "sampling an empty replay buffer");
        let (o, a) = (self.obs_dim, self.act_dim);
        batch.size = size;
        for v in [
            &mut batch.obs,
            &mut batch.act,
            &mut batch.rew,
            &mut batch.next_obs,
            &mut batch.terminated,
        ] {
            v.clear();
        }
        for _ in 0..size {
            let i = rng.random_range(0..self.len());
            batch.obs.extend_from_slice(&self.obs[i * o..(i + 1) * o]);
            batch.act.extend_from_slice(&self.act[i * a..(i + 1) * a]);
            batch.rew.push(self.rew[i]);
            batch
                .next_obs
                .extend_from_slice(&self.next_obs[i * o..(i + 1) * o]);
            batch.terminated.push(self.terminated[i]);
        }
    }
}

impl ReplayBuffer {
    /// The stored rows in storage order (not oldest first once the buffer has wrapped).
    pub fn columns(&self) -> Columns<'_> {
        Columns {
            obs: &self.obs,
            act: &self.act,
            rew: &self.rew,
            next_obs: &self.next_obs,
            terminated: &self.terminated,
        }
    }

    /// Storage indices of the newest `k` rows (fewer if the buffer holds fewer).
    pub fn recent(&self, k: usize) -> Vec<usize> {
        let n = self.len();
        let k = k.min(n);
        if n < self.capacity {
            (n - k..n).collect()
        } else {
            (0..k)
                .map(|j| (self.head + self.capacity - k + j) % self.capacity)
                .collect()
        }
    }

    /// A buffer of `capacity` holding the newest `min(len, capacity)` rows of this one.
    pub fn resized(&self, capacity: usize) -> ReplayBuffer {
        let mut out = ReplayBuffer::new(capacity, self.obs_dim, self.act_dim);
        let n = self.len();
        let keep = n.min(capacity);
        // Storage index of the oldest row: `head` once the buffer has wrapped, else 0.
        let oldest = if n == self.capacity { self.head } else { 0 };
        let (o, a) = (self.obs_dim, self.act_dim);
        for k in n - keep..n {
            let i = (oldest + k) % n.max(1);
            let f = |v: &[f32], w: usize| -> Vec<f64> {
                v[i * w..(i + 1) * w]
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect()
            };
            out.push(
                &f(&self.obs, o),
                &f(&self.act, a),
                f64::from(self.rew[i]),
                &f(&self.next_obs, o),
                self.terminated[i] > 0.5,
            );
        }
        out
    }
}

/// A replay buffer's arrays, row-major.
pub struct Columns<'a> {
    pub obs: &'a [f32],
    pub act: &'a [f32],
    pub rew: &'a [f32],
    pub next_obs: &'a [f32],
    pub terminated: &'a [f32],
}

impl Batch {
    /// Appends `other`'s rows.
    pub fn append(&mut self, other: &Batch) {
        self.size += other.size;
        self.obs.extend_from_slice(&other.obs);
        self.act.extend_from_slice(&other.act);
        self.rew.extend_from_slice(&other.rew);
        self.next_obs.extend_from_slice(&other.next_obs);
        self.terminated.extend_from_slice(&other.terminated);
    }
}

const MAGIC: &[u8; 8] = b"MPDPRB1\n";

impl ReplayBuffer {
    /// Writes the buffer in a compact binary form: a magic line, six little-endian u64
    /// (obs_dim, act_dim, capacity, head, len, 0), then the arrays as little-endian f32.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        crate::store::fault_point();
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        w.write_all(MAGIC)?;
        for v in [
            self.obs_dim,
            self.act_dim,
            self.capacity,
            self.head,
            self.len(),
            0,
        ] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        for array in [
            &self.obs,
            &self.act,
            &self.rew,
            &self.next_obs,
            &self.terminated,
        ] {
            for v in array.iter() {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        w.flush()
    }

    /// Reads what [`ReplayBuffer::save`] wrote.
    pub fn load(path: &std::path::Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        let bad = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("replay buffer file: {what}"),
            )
        };
        if bytes.len() < 56 || &bytes[..8] != MAGIC {
            return Err(bad("not a replay buffer"));
        }
        let word = |i: usize| {
            u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes")) as usize
        };
        let (obs_dim, act_dim, capacity, head, len) = (word(0), word(1), word(2), word(3), word(4));
        let sizes = [len * obs_dim, len * act_dim, len, len * obs_dim, len];
        if bytes.len() != 56 + 4 * sizes.iter().sum::<usize>()
            || len > capacity
            || head >= capacity.max(1)
        {
            return Err(bad("truncated or inconsistent"));
        }
        let mut floats = bytes[56..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        let mut take = |n: usize| -> Vec<f32> { floats.by_ref().take(n).collect() };
        Ok(ReplayBuffer {
            obs_dim,
            act_dim,
            capacity,
            head,
            obs: take(sizes[0]),
            act: take(sizes[1]),
            rew: take(sizes[2]),
            next_obs: take(sizes[3]),
            terminated: take(sizes[4]),
        })
    }
}

fn write_row(dst: &mut [f32], row: usize, width: usize, src: &[f64]) {
    for (d, &s) in dst[row * width..(row + 1) * width].iter_mut().zip(src) {
        *d = s as f32;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    #[test]
    fn ring_overwrites_the_oldest_and_samples_rows_whole() {
        let mut buf = ReplayBuffer::new(3, 2, 1);
        for i in 0..5 {
            let x = i as f64;
            buf.push(&[x, x + 0.5], &[-x], x * 10.0, &[x + 1.0, x + 1.5], i == 4);
        }
        assert_eq!(buf.len(), 3);
        // Transitions 2, 3, 4 remain (3 and 4 overwrote 0 and 1).
        let mut rewards = buf.rew.clone();
        rewards.sort_by(f32::total_cmp);
        assert_eq!(rewards, vec![20.0, 30.0, 40.0]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let mut batch = Batch::default();
        buf.sample_into(&mut rng, 64, &mut batch);
        assert_eq!(batch.obs.len(), 128);
        for r in 0..64 {
            let x = batch.obs[2 * r];
            assert_eq!(batch.obs[2 * r + 1], x + 0.5);
            assert_eq!(batch.act[r], -x);
            assert_eq!(batch.rew[r], x * 10.0);
            assert_eq!(batch.next_obs[2 * r], x + 1.0);
            assert_eq!(batch.terminated[r], if x == 4.0 { 1.0 } else { 0.0 });
        }
        let path = std::env::temp_dir().join(format!("mpdp-replay-{}.bin", std::process::id()));
        buf.save(&path).unwrap();
        let back = ReplayBuffer::load(&path).unwrap();
        std::fs::write(&path, b"MPDPRB1\nshort").unwrap();
        assert!(ReplayBuffer::load(&path).is_err());
        std::fs::remove_file(&path).ok();
        assert_eq!(back, buf);
    }

    #[test]
    fn resizing_keeps_the_newest_rows() {
        let mut buf = ReplayBuffer::new(4, 1, 1);
        for i in 0..6 {
            let x = i as f64;
            buf.push(&[x], &[x], x, &[x], false);
        }
        // Holds 2, 3, 4, 5 (wrapped). Shrinking keeps 4 and 5; growing keeps all four.
        let small = buf.resized(2);
        let mut r = small.rew.clone();
        r.sort_by(f32::total_cmp);
        assert_eq!(r, vec![4.0, 5.0]);
        let big = buf.resized(10);
        assert_eq!(big.rew, vec![2.0, 3.0, 4.0, 5.0]);
        let recent: Vec<f32> = buf.recent(3).iter().map(|&i| buf.rew[i]).collect();
        assert_eq!(recent, vec![3.0, 4.0, 5.0]);
        assert_eq!(big.recent(9), vec![0, 1, 2, 3]);
        let mut batch = Batch::default();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        big.sample_into(&mut rng, 3, &mut batch);
        let mut other = Batch::default();
        small.sample_into(&mut rng, 2, &mut other);
        batch.append(&other);
        assert_eq!((batch.size, batch.obs.len(), batch.rew.len()), (5, 5, 5));
    }
}

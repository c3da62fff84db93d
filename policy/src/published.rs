//! Publishing a classifier to readers that must never lock: a new one is built aside and swapped
//! in with one atomic pointer store; readers holding the old one finish with it undisturbed.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::classifier::Classifier;

/// A classifier and its generation (how many times the published one has been replaced).
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    pub classifier: Classifier,
}

/// A cell holding the current [`Classifier`]. Readers never lock; writers (policy reloads)
/// serialise among themselves so that generation numbers only grow.
#[derive(Debug)]
pub struct Published {
    current: ArcSwap<Generation>,
    writer: Mutex<()>,
}

impl Published {
    pub fn new(classifier: Classifier) -> Self {
        Published {
            current: ArcSwap::from_pointee(Generation {
                number: 0,
                classifier,
            }),
            writer: Mutex::new(()),
        }
    }

    /// The classifier in force now. Hold the guard for a batch of packets, not for long.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Generation>> {
        self.current.load()
    }

    /// The classifier in force now, as an owned reference (one reference-count increment): for
    /// a worker that keeps it across many batches and checks `load().number` for changes.
    pub fn load_full(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Replaces the classifier; returns the new generation number.
    pub fn publish(&self, classifier: Classifier) -> u64 {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let number = self.current.load().number + 1;
        self.current
            .store(Arc::new(Generation { number, classifier }));
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load, Source};

    fn classifier(text: &str) -> Classifier {
        Classifier::compile(Arc::new(load(&[Source::new("t.yaml", text)]).unwrap()))
    }

    #[test]
    fn readers_keep_their_generation_while_a_new_one_is_published() {
        let published = Published::new(classifier(""));
        let before = published.load();
        let number = published.publish(classifier(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.1}\n",
        ));
        assert_eq!(number, 1);
        assert_eq!(before.number, 0);
        assert_eq!(before.classifier.cluster().inventory.pods.len(), 0);
        assert_eq!(
            published.load().classifier.cluster().inventory.pods.len(),
            1
        );
    }

    #[test]
    fn readers_on_other_threads_see_whole_generations() {
        let published = Arc::new(Published::new(classifier("")));
        let reader = {
            let published = Arc::clone(&published);
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..10_000 {
                    let g = published.load();
                    assert!(g.number >= last);
                    last = g.number;
                }
            })
        };
        for _ in 0..50 {
            published.publish(classifier(""));
        }
        reader.join().unwrap();
        assert_eq!(published.load().number, 50);
    }
}

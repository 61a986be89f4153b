//! Commands joined by pipes, made here rather than by a shell: each stage's
//! standard output becomes the next stage's standard input.
//!
//! Stages run one after another and each one's output is kept whole, so a
//! caller can read what flowed between two stages (the resolved manifest
//! between `ko resolve` and `kubectl apply`, say) and a failure names the
//! stage, its command and the tail of its output. Every stage keeps its own
//! environment, working directory and timeout.

use std::fmt;

use crate::{Cmd, CmdError, Output};

/// Commands joined by pipes: `a | b | c`, without a shell.
#[derive(Clone, Debug)]
pub struct Pipeline {
    stages: Vec<Cmd>,
}

/// A stage of a [`Pipeline`] failed.
#[derive(Debug, thiserror::Error)]
#[error("pipeline stage {stage} of {stages} failed")]
pub struct PipelineError {
    /// The failed stage, counted from 1.
    pub stage: usize,
    /// How many stages the pipeline has.
    pub stages: usize,
    /// What the stage's command reported.
    #[source]
    pub source: CmdError,
}

impl Pipeline {
    /// A pipeline of `stages`, in order. The first stage's standard input
    /// is whatever it was given ([`Cmd::stdin_bytes`], or none).
    ///
    /// # Panics
    ///
    /// When `stages` is empty.
    pub fn new(stages: Vec<Cmd>) -> Pipeline {
        assert!(!stages.is_empty(), "a pipeline needs at least one stage");
        Pipeline { stages }
    }

    /// The stages.
    pub fn stages(&self) -> &[Cmd] {
        &self.stages
    }

    /// Runs every stage, feeding each one's standard output to the next;
    /// returns every stage's output in order. The first stage that exits
    /// unsuccessfully stops the pipeline.
    pub async fn run(&self) -> Result<Vec<Output>, PipelineError> {
        let mut outputs: Vec<Output> = Vec::with_capacity(self.stages.len());
        for (i, stage) in self.stages.iter().enumerate() {
            let cmd = match outputs.last() {
                Some(prev) => stage.clone().stdin_bytes(prev.stdout.clone()),
                None => stage.clone(),
            };
            let out = cmd.run().await.map_err(|source| PipelineError {
                stage: i + 1,
                stages: self.stages.len(),
                source,
            })?;
            outputs.push(out);
        }
        Ok(outputs)
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_flows_from_stage_to_stage() {
        let p = Pipeline::new(vec![
            Cmd::new("printf").arg("b\\na\\nc\\n"),
            Cmd::new("sort"),
            Cmd::new("tr").args(["a-z", "A-Z"]),
        ]);
        let outs = p.run().await.unwrap();
        assert_eq!(outs.len(), 3);
        assert_eq!(outs[1].stdout_str(), "a\nb\nc\n");
        assert_eq!(outs[2].stdout_str(), "A\nB\nC\n");
    }

    #[tokio::test]
    async fn a_failed_stage_is_named_and_stops_the_rest() {
        let p = Pipeline::new(vec![
            Cmd::new("printf").arg("x"),
            Cmd::new("false"),
            Cmd::new("this-program-does-not-exist-ate"),
        ]);
        let e = p.run().await.unwrap_err();
        assert_eq!((e.stage, e.stages), (2, 3));
        assert!(matches!(e.source, CmdError::Failed { .. }), "{e:?}");
        assert!(e.to_string().contains("stage 2 of 3"), "{e}");
    }

    #[test]
    fn display_joins_the_vectors_with_pipes() {
        let p = Pipeline::new(vec![Cmd::new("a").arg("-f"), Cmd::new("b").arg("-")]);
        assert_eq!(p.to_string(), "a -f | b -");
    }
}

//! Live: a module's layers merged onto the system, journaled with the service commands its
//! scripts deferred, which then run for real, in order, each through the fix-module host (the
//! same path a replay of the journal takes, `apply::deferred`).

use std::path::Path;

use super::module::{ModuleError, ModuleRun};
use super::report::{SelfUsage, Step, Usage};

impl ModuleRun<'_> {
    /// Live: the module's layers onto the system, journaled with the service commands its
    /// scripts deferred, which then run for real, in order, each through the fix-module host.
    pub(super) fn merge(&self, steps: &mut Vec<Step>) -> Result<(), ModuleError> {
        let text = std::fs::read_to_string(self.stack.deferred(self.k)).unwrap_or_default();
        let mut deferred = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let words: Vec<String> =
                serde_json::from_str(line).map_err(|source| ModuleError::DeferredRecord {
                    line: line.to_owned(),
                    source,
                })?;
            deferred.push(words);
        }
        // A `service` or `systemctl` run chrooted into another root still starts and stops
        // this host's processes (same PID namespace, same service manager): only on request.
        if self.stack.target.root != Path::new("/") && !self.opts.run_deferred {
            for words in deferred.drain(..) {
                self.print.warning(&format!(
                    "{}: Not executing deferred (the root is not /; --run-deferred runs it): {}",
                    self.name,
                    words.join(" ")
                ));
            }
        }
        let start = SelfUsage::now();
        let run = &self.stack.run.id;
        let deferred =
            crate::apply::deferred::Deferred::new(deferred, &self.options, self.opts.timeout);
        let result = crate::apply::apply(
            &self.opts.state_dir,
            run,
            self.name,
            &format!("{run}.m{}", self.k),
            &self.stack.target.root,
            &self.stack.merge_layers(self.k),
            crate::apply::After {
                node: self.opts.node.clone(),
                deferred: deferred.clone(),
                no_undo: self.opts.keep_undo == 0,
            },
        );
        steps.push(Step::new(
            self.name,
            "merge",
            None,
            Usage::of_self_since(start),
            result.is_ok(),
        ));
        let applied = result.map_err(ModuleError::Merge)?;
        for w in &applied.warnings {
            self.print.warning(&format!("{}: {w}", self.name));
        }
        self.print
            .info(&format!("Merged {}: {} path(s)", self.name, applied.paths));
        let mut failure = None;
        let owner = crate::apply::deferred::Owner {
            root: &self.stack.target.root,
            node: &self.opts.node,
            module: self.name,
        };
        let lock_dir = self.opts.state_dir.join("locks");
        for words in &deferred.commands {
            let shown = words.join(" ");
            self.print.info(&format!("Executing deferred : {shown}"));
            // The same path a replay of the journal takes: same request, environment, timeout.
            let outcome = crate::apply::deferred::run(owner, &deferred, words, &lock_dir)
                .map_err(ModuleError::from);
            // Every deferred command runs, even after one failed: each is its own service.
            if let Err(e) =
                outcome.and_then(|o| self.record(steps, "deferred", Some(shown), o, true))
            {
                failure.get_or_insert(e);
            }
        }
        if let Some(journal) = &applied.journal {
            crate::apply::journal::remove(journal)?;
        }
        match failure {
            Some(e) => Err(ModuleError::Deferred(Box::new(e))),
            None => Ok(()),
        }
    }
}

-- The change log: what each generation changed, written in the same transaction as the bump of
-- meta.generation, so a replica (or a consumer whose in-process copy was lost) can read every
-- change set after the generation it holds. Pruned by age from the write path; a consumer whose
-- generation is older than the oldest kept entry reloads everything.
CREATE TABLE change_log (
    generation INTEGER PRIMARY KEY,          -- the generation the write committed as; consecutive
    changes    TEXT    NOT NULL,             -- JSON array of model::Change (full peer/org rows)
    created_at INTEGER NOT NULL              -- commit time, unix seconds; pruning goes by it
);

"""Where a sweep runs: the Ray Tune driver, SLURM jobs and the Ray cluster of a job.

Owns `ray_driver` (the Tune driver, each unit kind asking for its own resources),
`work_queue` (the searcher that releases fine-tunes when their pre-train is done),
`tune_callbacks` (trial names, failed units, TensorBoard), `driver_process` (Ctrl-C, the
stop event, Ray's logs, the heartbeat), `local_checks` (this machine and `--address`,
checked before a local run writes), `local_ray` (a local run's Ray never outlives its
driver), `node_check` (`ltsweep doctor`), `progress` (the terminal's progress view) with
`sweep_progress` (that view priced for one sweep), `slurm` (the submit host's side: submit,
follow, count requeues, cancel), `slurm_record` (the run's slurm.json), `sweep_job` (what a
SLURM job runs on its nodes: a Ray head and the driver on the first, Ray workers on the
others, requeue on SIGUSR2), `ray_node` (one job's Ray on a node: ports, temp dir,
`ray start`, stop) and `reaper` (a job's Ray never outlives its task).

May import: ray, submitit, `ltsweep.planning`, `ltsweep.units`, `ltsweep.store`,
`ltsweep.sweep`; torch only inside a Tune trial (in the worker).
"""

"""Where a sweep runs: the Ray Tune driver, SLURM jobs and the Ray cluster of a job.

Owns `ray_driver` (the Tune driver: a searcher that releases fine-tunes when their pre-train
is done, each unit kind asking for its own resources), `driver_process` (Ctrl-C, the stop
event, Ray's logs, the heartbeat), `progress` (the terminal's progress line), `slurm`
(submitit: submit, record, requeue, status, cancel) and `ray_node` (one job's Ray on a
node), with the helpers a SLURM job runs on its nodes.

May import: ray, submitit, `ltsweep.planning`, `ltsweep.units`, `ltsweep.store`,
`ltsweep.sweep`; torch only inside a Tune trial (in the worker).
"""

"""The ablation study of the paper (Table 1, Table 2), offline, with seeds, and its report
(experiment code: run by `python -m experiments.ablation`; not part of the msss_tf library).

    run_study(out_dir, budget, seeds, configs, tasks) -> study directory
    write_report(out_dir)           -> results.csv, results.md, one PNG per task/metric
    render_docs(out_dir, docs_path) -> docs/results.md (+ plots copied beside it)

Rows (`CONFIGURATIONS`, named as in method.md's results table): COLA (clip only),
clip + frame, clip + pitch, all three (the proposed method), all three with cosine
similarity; and two reference rows that are not pre-trained: a randomly initialised
encoder of the same architecture, and the log-mel front end alone
(`msss_tf.embedding.LogMelStatsEmbedder`: mean and standard deviation over time of the
log-mel frames).

Every pre-trained row uses the same budget (`BUDGETS`: steps, batch, learning rate, encoder
size, probe epochs, task size; every training hyper-parameter of the study is there) and
the same seeds; seed s sets the model initialisation, the pre-training data order and views,
and the probe initialisation. Each (configuration, seed) pre-trains on the built-in
synthetic corpus, then probes the downstream tasks on the frozen encoder.

Layout of a study directory:

    study.json                         budget, seeds, configurations, tasks, invocations
    runs/<config>/seed-<s>/pretrain/   the pre-training run directory (`msss_tf.training.pretrain`)
    runs/<config>/seed-<s>/run_result.json   probe results and timings: the run is done
    results.csv, results.md            mean +- std over seeds per task / metric and row
    plots/<task>-<metric>.png          one bar chart per task / metric (error bar: std)

Resuming: a (configuration, seed) whose `run_result.json` exists is neither trained nor
probed again; an interrupted pre-training resumes through `pretrain`'s own resume (one
epoch granularity); an interrupted probe stage is redone.

Modules: `budgets` (budgets, rows, the study directory's layout), `runner` (the runs),
`report` (results.csv, results.md, plots, the docs page), `paper` (the paper's numbers; its
claims evaluated on a summary). Their public names are importable from this package.
"""

from experiments.study.budgets import (BUDGETS, BUILTIN_TASKS, CONFIG_BY_KEY, CONFIGURATIONS,
                                       PLOT_DIR, REAL_TASKS, RESULTS_CSV, RESULTS_MD,
                                       RUN_RESULT, STUDY_FILE, Budget, Configuration,
                                       load_budget, read_run_result, run_dir,
                                       select_configurations)
from experiments.study.paper import (PAPER_COLUMNS, PAPER_RESULTS, TASK_ANALOGUE, claims_md,
                                     evaluate_claims, paper_summary, paper_table)
from experiments.study.report import (NOTES_BEGIN, NOTES_END, NOTES_PLACEHOLDER, aggregate,
                                      collect_results, paper_table_md, plot_results,
                                      read_notes, render_docs, results_table_md,
                                      write_report, write_results_csv)
from experiments.study.runner import (available_real_tasks, default_jobs, load_tasks,
                                      machine_info, make_embedder, probe_all, run_one,
                                      run_study)

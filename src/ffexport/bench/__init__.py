"""Benchmark harness (``ffexport bench``): per-module and end-to-end timing, memory, and reports.

* ``plan``: the settings, the parsing of the command's lists, and the plan of rows (which can run here);
* ``sweep``: the run: inspect the machine, prepare artifacts, measure each row, write the report
  (:func:`~ffexport.bench.sweep.run_bench`);
* ``pool``: each job in a fresh worker process, stopped at its timeout;
* ``worker``: what one worker process does (``env``, ``prepare``, ``module``, ``pipeline``, ``naive``);
* ``prepare``: a module's inputs, torch references and artifacts, made before any timing;
* ``timing``, ``memory``: the timers and the memory probe a worker measures with;
* ``e2e``, ``naive``: the end-to-end runs: the reference pipeline and the naive baseline, and their frames;
* ``report``, ``plots``: the machine's facts, results.json, results.md, the terminal table, and the PNG plots.
"""

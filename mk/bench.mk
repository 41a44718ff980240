# Benchmarks of the latest `make prune-yolo` run folder ($(RUN) = runs/<recipe>):
# models A/B + the unpruned model + OpenCV HOG, then the Markdown/HTML report.
#   make bench [RECIPE=configs/x.yaml] [BENCH_ARGS="--iterations 200 --threads 2"]
#   make bench-compare A=runs/a/bench/bench.json B=runs/b/bench/bench.json [FAIL_BELOW=1.5]
BENCH_ARGS ?=
FAIL_BELOW ?=

.PHONY: bench bench-report bench-compare

bench: setup
	@test -d $(RUN) || { echo "no run folder $(RUN): run make prune-yolo first (or RUN=...)"; exit 2; }
	MPLBACKEND=Agg $(PY) -m benchmarks run $(RUN) $(BENCH_ARGS)
	MPLBACKEND=Agg $(PY) -m benchmarks report $(RUN)
	@echo "open $(RUN)/report/report.html"

bench-report: setup
	MPLBACKEND=Agg $(PY) -m benchmarks report $(RUN)

bench-compare: setup
	$(PY) -m benchmarks compare $(A) $(B) $(if $(FAIL_BELOW),--fail-below $(FAIL_BELOW))

#!/usr/bin/env bash
# Re-score every method with the evaluation measures (segmentation, perceptual, spectra).
# Writes the JSON under benchmarks/results/ that the README tables quote. Run from the
# repository root with the project's venv; takes hours on 2 CPU cores (the learned rows
# train their networks), so it runs nice'd with one torch thread per process.
set -euo pipefail
DATA=${VEMRESTORE_DATA:-../shared/data}
MEDULLA=$DATA/medulla_fibsem_10nm
OUT=benchmarks/results
export OMP_NUM_THREADS=1
run() { nice -n 10 "$@"; }

# SkelEM as the published rows ran it: a skeleton from scratch and the refiner defaults of then.
SKELEM_PUBLISHED='{"steps": 1200, "from_scratch": true, "base_channels": 32, "depth": 3,
    "inference": {"strength": 0.3},
    "train": {"batch_size": 16, "patch_size": 64, "learning_rate": 5e-4, "validate_every": 200}}'
# Axial x4 / x8 on medulla sample2 with its body labels: baselines, then the learned methods.
run .venv/bin/vemrestore bench --data "$MEDULLA/sample2_raw.tif" --labels "$MEDULLA/sample2_bodies.tif" \
    --factors 4 8 --methods nearest,linear,cubic --metrics all --json $OUT/axial_structure.json --overwrite
run .venv/bin/vemrestore bench --data "$MEDULLA/sample2_raw.tif" --labels "$MEDULLA/sample2_bodies.tif" \
    --factors 8 --methods skeleton,skelem --metrics all \
    --options "{\"skeleton\": {\"steps\": 600, \"from_scratch\": true}, \"skelem\": $SKELEM_PUBLISHED}" \
    --json $OUT/axial_structure_learned_x8.json --overwrite
run .venv/bin/vemrestore bench --data "$MEDULLA/sample2_raw.tif" --labels "$MEDULLA/sample2_bodies.tif" \
    --factors 4 --methods skeleton,skelem --metrics all \
    --options "{\"skeleton\": {\"steps\": 600, \"from_scratch\": true}, \"skelem\": $SKELEM_PUBLISHED}" \
    --json $OUT/axial_structure_learned_x4.json --overwrite
# D2R beside the skeleton and the supervised 3D network (see the README for the rows).
run .venv/bin/python benchmarks/d2r_bench.py --factors 8 \
    --rows cubic skeleton recovered d2r d2r-skeleton supervised --out $OUT/d2r_x8.json
# Isotropy of a real anisotropic stack, no ground truth.
run .venv/bin/vemrestore bench --no-reference "$DATA/isbi2012_sstem/test_raw.tif" \
    --methods nearest,linear,cubic --json $OUT/isotropy_isbi.json --overwrite
# Missing sections on ISBI (labelled sections 15-29 scored) and lateral x2 on EPFL.
run .venv/bin/python benchmarks/slices_bench.py --datasets isbi --steps 1500 \
    --out $OUT/slices_isbi_structure.json
run .venv/bin/python benchmarks/lateral_bench.py --threads 1 --datasets epfl --factors 2 \
    --rows bicubic truth l1 noisier-noisy upper-bound --out $OUT/lateral_x2_structure.json
# The report of the axial table, and its screenshot in headless Chromium.
.venv/bin/vemrestore report $OUT/axial_structure.json --out $OUT/axial_report.html --overwrite
.venv/bin/python benchmarks/report_screenshot.py $OUT/axial_report.html --png $OUT/axial_report.png --height 4200
rm $OUT/axial_report.html  # 1.5 MB of embedded images: the JSON regenerates it

#!/usr/bin/env bash
# Reproduces the stage-4 metrics table (docs/experiments/stage-01-04.md), bundled weights, CPU;
# the current results and their commands: docs/MODEL_CARD.md, "Current results".
# Usage: bash scripts/model_card_eval.sh OUT_DIR   (needs ../shared/data for the test subject and DICOM case)
set -euo pipefail
out=${1:-model_card_eval}
shared=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
ctsam3d evaluate --data Resources/sample --output "$out/bundled_top20" --max-structures 20 --baseline growcut --overwrite
ctsam3d evaluate --data Resources/sample --output "$out/liver_cpp" --structures liver --clicks 1 --overwrite
ctsam3d evaluate --data Resources/sample --output "$out/liver_nocpp" --structures liver --clicks 1 --no-cpp --overwrite
ctsam3d evaluate --data Resources/sample --output "$out/aorta_cpp" --structures aorta --clicks 1 --overwrite
ctsam3d evaluate --data Resources/sample --output "$out/aorta_nocpp" --structures aorta --clicks 1 --no-cpp --overwrite
ctsam3d evaluate --data "$shared/totalseg-format" --split test --output "$out/test_split" --baseline growcut --overwrite
# The 3-slice DICOM case with its NRRD label map (liver=1, spine=2, heart=3), as a multilabel dataset.
dicom="$out/dicom_dataset"
mkdir -p "$dicom/images" "$dicom/labels"
python - "$shared/dicom/ct-3slice-with-seg" "$dicom" <<'PY'
import sys
import SimpleITK as sitk
from CTSAM3DLib.io.readers import read_image
src, dst = sys.argv[1], sys.argv[2]
sitk.WriteImage(read_image(f"{src}/ct-3slice"), f"{dst}/images/ct3slice.nii.gz")
sitk.WriteImage(sitk.ReadImage(f"{src}/liver_spine_seg.nrrd"), f"{dst}/labels/ct3slice.nii.gz")
open(f"{dst}/labels.csv", "w").write("value,name\n1,liver\n2,spine\n")
PY
ctsam3d evaluate --data "$dicom" --output "$out/dicom_case" --clicks 1,3,5 --baseline growcut --overwrite

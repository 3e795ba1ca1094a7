#!/usr/bin/env bash
# Run HERE, where pip reaches PyPI: download the wheels the H200 image lacks into .whl/ at the repo root,
# then check each one's requirements against the image and the total size against the carry limit.
#   bash benchmarks/gpu/fetch_wheels.sh                      # Python 3.12 wheels for the H200 image
#   PYVER=3.11 DEST=/tmp/whl311 bash benchmarks/gpu/fetch_wheels.sh   # to rehearse run_h200.sh here
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${DEST:-.whl}"
PYVER="${PYVER:-3.12}"
# The stack rdo is tested on (requirements/pinned.txt), less what the image already has at a version that
# satisfies it. The image has transformers 5.17.0; 5.24.0 needs huggingface-hub>=1.31 (image 1.33.0),
# tokenizers>=0.23.1 (0.23.2), safetensors>=0.8.0 (0.8.0), accelerate>=1.1 (1.15.0): all there. regex
# (transformers checks >=2025.10.22 at import) and fsspec (datasets pins <=2026.9.0) come along because
# the image's versions are unknown; pyarrow (55 MB) cannot fit and is taken from the image.
PKGS=(trl==1.16.0 datasets==5.2.0 transformers==5.24.0 dill==0.4.1 multiprocess==0.70.19
      regex==2026.11.19 fsspec==2026.9.0)
# For check_engines.sh: deepspeed's requirements the image lacks. deepspeed itself is an sdist only on PyPI;
# it is built below into a pure-Python wheel (DS_BUILD_OPS=0: its C++/CUDA ops are JIT-built when used).
PKGS+=(hjson==3.1.0 msgpack==1.2.4 ninja==1.13.2 py-cpuinfo==9.0.0 einops==0.8.2 pydantic==2.14.4
       pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)
DEEPSPEED="${DEEPSPEED:-deepspeed==0.19.8}"
BUILD_PY="${BUILD_PY:-python3}"  # a Python with torch: deepspeed's setup.py imports it
LIMIT_MIB=40  # the carry limit is 64 MiB for everything that travels; keep well under it

rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$DEST" "${PKGS[@]}"
if [ -n "$DEEPSPEED" ]; then
  DS_BUILD_OPS=0 "$BUILD_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "$DEEPSPEED"
fi

python3 - "$DEST" "$LIMIT_MIB" <<'PY'
import re, sys, zipfile
from pathlib import Path

dest, limit = Path(sys.argv[1]), float(sys.argv[2])
# The H200 image's packages (device KINDS.md, read 2026-11-17), normalised names.
IMAGE = set("""accelerate aiohttp annotated-doc anyio certifi charset-normalizer click filelock fsspec hf-xet
httpcore httpx huggingface-hub idna jinja2 markupsafe numpy packaging pandas peft psutil pyarrow
python-dateutil pyyaml regex requests rich safetensors shellingham tokenizers torch tqdm transformers triton
typer typing-extensions urllib3 xxhash""".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = sorted(dest.glob("*.whl"))
carried = {norm(w.name.split("-")[0]) for w in wheels}
missing = set()
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l]
    for r in reqs:
        name = norm(re.split(r"[\s<>=!~;\[(]", r, 1)[0])
        if name not in IMAGE and name not in carried and "python_version < \"3.1" not in r and "sys_platform == \"win" not in r.lower():
            missing.add(f"{name} (for {w.name.split('-')[0]})")
size = sum(w.stat().st_size for w in wheels) / 2**20
print(f"{len(wheels)} wheels, {size:.1f} MiB in {dest}/:")
for w in wheels:
    print(f"  {w.stat().st_size / 2**20:6.2f} MiB  {w.name}")
if missing:
    print("requirements neither carried nor in the image:", ", ".join(sorted(missing)))
if size > limit:
    sys.exit(f"{size:.1f} MiB is over the {limit:.0f} MiB budget for wheels")
PY

# CoDERT on NVIDIA's NeMo Framework container: train, export and transcribe with the container's CUDA PyTorch.
#
#   docker build -t nemo-codert .
#   docker build --build-arg NEMO_TAG=<yy.mm> -t nemo-codert .     # another NGC NeMo release
#
# Base image: nvcr.io/nvidia/nemo:25.11, the newest NeMo Framework tag named in NVIDIA's install guide
# ("docker pull nvcr.io/nvidia/nemo:25.11") when this was written. To our knowledge it ships NeMo 2.6 and an NGC
# PyTorch 2.9 pre-release build (torch 2.9.0a0+<commit>), not NeMo 3.0. This package needs nemo_toolkit[asr] 3.0.x
# (requirements.txt), which needs torch>=2.6, so pip upgrades NeMo inside the image while the constraint below
# pins torch, torchaudio, torchvision and triton to the container's own builds: the CUDA torch is never replaced.
# Should a NeMo 3.0 release ever require a newer torch than the image has, the build stops at pip's dependency
# resolution instead of swapping torch. A future NGC tag that ships NeMo 3.0 itself needs no upgrade at all.
# UNVERIFIED: docker cannot run on the machines this project is developed on, so neither the tag's contents nor
# this build were checked; tests/test_export.py runs the RUN step's install command below, verbatim, in a venv
# whose (system) torch plays the container's, and checks torch is untouched.
ARG NEMO_TAG=25.11
FROM nvcr.io/nvidia/nemo:${NEMO_TAG}

WORKDIR /workspace/nemo-codert
COPY pyproject.toml requirements.txt README.md ./
COPY nemo_codert ./nemo_codert
COPY conf ./conf
COPY examples ./examples

# install-step: keep the container's torch stack, install this package (editable) and its missing dependencies.
RUN python -c "import importlib.metadata as md; have = {(d.metadata['Name'] or '').lower(): d.version for d in md.distributions()}; print('\n'.join(f'{n}=={have[n]}' for n in ('torch', 'torchaudio', 'torchvision', 'triton') if n in have))" > .torch-constraints.txt && python -m pip install --no-cache-dir --no-build-isolation --constraint .torch-constraints.txt -e . && python -c "import torch, nemo_codert.models; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# The corpus and experiments land here; mount a volume to keep them.
VOLUME ["/workspace/nemo-codert/data", "/workspace/nemo-codert/nemo_experiments"]
CMD ["python", "examples/train_codert.py", "--config-name=codert_small", "trainer.accelerator=gpu", "trainer.devices=1"]

"""What a Determined trial container's files say, for a trial the tests run on this machine.

Python imports this module at startup when this folder is on PYTHONPATH. With
FAKE_CONTAINER_ROOT set, it points Determined at that folder instead of the container paths
no test can write: the cluster info Determined reads from /run/determined/info/*.json
(det.get_cluster_info()), and the clean copy of the model directory it expects in
/run/determined/train/model (copied into every checkpoint). tests/fake_master.py writes them.
"""

import json
import os
import pathlib

root = os.environ.get("FAKE_CONTAINER_ROOT")
if root:
    import determined._info
    from determined import constants

    info_dir = pathlib.Path(root, "info")
    determined._info._info = determined._info.ClusterInfo(
        trial_info=determined._info.TrialInfo._from_file(str(info_dir / "trial.json")),
        rendezvous_info=determined._info.RendezvousInfo._from_file(
            str(info_dir / "rendezvous.json")
        ),
        resources_info=determined._info.ResourcesInfo._from_file(str(info_dir / "resources.json")),
        **json.loads((info_dir / "cluster.json").read_text()),
    )
    constants.MANAGED_TRAINING_MODEL_COPY = str(pathlib.Path(root, "train", "model"))

"""A Dask worker preload that kills its worker process on one clip (``tests/test_worker_death.py``).

Named by ``DASK_DISTRIBUTED__WORKER__PRELOAD`` in a build's environment, it runs in every worker
process the build's local cluster starts. When such a worker is given the clip whose file name is
``$VDV_TEST_DIE_ON_CLIP``, it appends its pid to ``$VDV_TEST_DIE_LOG`` and exits at once, the way a
worker killed by the kernel's out-of-memory killer goes: no exception, no clean-up. With
``$VDV_TEST_DIE_HOW`` = ``freeze`` it stops itself instead (SIGSTOP): alive to its nanny, silent
to everyone, like a worker stuck in the kernel.
"""

import os
import signal


def dask_setup(worker):
    from pipeline.extraction import stage as extraction

    target = os.environ["VDV_TEST_DIE_ON_CLIP"]
    extract = extraction.extract_clip

    def extract_or_die(clip, *args, **kwargs):
        if os.path.basename(str(clip["path"])) == target:
            with open(os.environ["VDV_TEST_DIE_LOG"], "a") as fh:
                fh.write(f"{os.getpid()}\n")
            if os.environ.get("VDV_TEST_DIE_HOW") == "freeze":
                os.kill(os.getpid(), signal.SIGSTOP)
            os._exit(137)
        return extract(clip, *args, **kwargs)

    extraction.extract_clip = extract_or_die

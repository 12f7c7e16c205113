"""Bad data of every kind gives an error that names the file or item; nothing else is touched."""

import json

import numpy as np
import pytest

from namm.tasks import d4rl, longbench, video_qa
from namm.tasks.gym_envs import make_env


def test_truncated_hdf5_names_the_file(tmp_path):
    n = 20
    data = {"observations": np.zeros((n, 11), np.float32), "actions": np.zeros((n, 3), np.float32),
            "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool),
            "next_observations": np.zeros((n, 11), np.float32)}
    good = d4rl.write_dataset(tmp_path / "good.hdf5", data)
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(d4rl.DatasetError, match="bad.hdf5"):
        d4rl.load_dataset(bad)
    assert len(d4rl.load_dataset(good).rewards) == n  # the good file is untouched


def test_corrupt_and_empty_jsonl_name_the_file_and_line(tmp_path):
    good = {"input": "q", "context": "c", "answers": ["a"]}
    (tmp_path / "hotpotqa.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(longbench.LongBenchDataError, match=r"hotpotqa.jsonl:2"):
        longbench.load_task("hotpotqa", data_dir=tmp_path)
    (tmp_path / "qasper.jsonl").write_text("")
    with pytest.raises(longbench.LongBenchDataError, match="qasper.jsonl"):
        longbench.load_task("qasper", data_dir=tmp_path)


def test_truncated_video_and_missing_field_name_the_item(tmp_path):
    frames = np.zeros((8, 16, 16, 3), np.uint8)
    np.save(tmp_path / "v.npy", frames)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "v.npy").read_bytes()[:300])
    with pytest.raises(video_qa.VideoDecodeError, match="cut.npy"):
        video_qa.sample_frames(tmp_path / "cut.npy", 4)
    assert video_qa.sample_frames(tmp_path / "v.npy", 4).shape == (4, 16, 16, 3)
    ann = tmp_path / "count.json"
    ann.write_text(json.dumps([{"video": "v.npy", "candidates": ["1", "2"], "answer": "1"}]))  # no question
    with pytest.raises(video_qa.VideoQADataError, match="question"):
        video_qa.load_mlvu(ann, video_root=tmp_path)


def test_unknown_env_and_task_list_the_known_ones():
    with pytest.raises(ValueError, match="hopper"):
        make_env("hoppr")
    with pytest.raises(ValueError, match="narrativeqa"):
        longbench.get_task("narativeqa")

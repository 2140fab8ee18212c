from selfimprove.core.records import EvalResult, Message, Sample
from selfimprove.dataset.table import frame_to_samples, read_samples, samples_to_frame
from selfimprove.store.tables import table_digest, write_table


def sample(i, split, evals):
    return Sample(sample_id=f"s{i}", span_id=f"span{i}", trace_id=f"t{i}", split=split,
                  start_time="2024-05-01T00:00:00+00:00",
                  history=(Message(role="system", content="sys"), Message(role="user", content=f"hello {i}")),
                  output=Message(role="assistant", content=None, tool_calls=[
                      {"id": "c1", "function": {"name": "lookup", "arguments": "{}"}}]),
                  evals=evals, prompt_tokens=10, completion_tokens=5, latency_ms=12.5, policy_digest="sha256:x")


def test_round_trip_through_parquet(tmp_path):
    samples = [sample(2, "test", {"tone": EvalResult(label="ok", score=1.0, explanation="fine")}),
               sample(1, "train", {})]  # missing eval kept and marked by nulls
    path = write_table(tmp_path / "dataset.parquet", samples_to_frame(samples, ["tone"]))
    back = read_samples(path)
    assert [s.sample_id for s in back] == ["s1", "s2"]  # sorted
    assert back[1] == samples[0] and back[0].evals == {}
    assert [s.sample_id for s in read_samples(path, split="train")] == ["s1"]
    assert frame_to_samples(samples_to_frame(back, ["tone"])) == back
    assert table_digest(path)[1] == 2

"""Seeds an MLflow server with MLflow 3 GenAI objects a copy-run must carry: an evaluation run made
by `mlflow.genai.evaluate` (plain predict function loading a registered prompt with an alias,
custom scorers, no LLM), and a run with a
logged model whose traced function made nested spans (one with an exception event) and got a
human feedback assessment.

Run with the venv's python:  python tests/e2e/seed_genai.py http://127.0.0.1:5000 [experiment]
Prints a JSON object with the run ids.
"""
import json
import sys

import mlflow
from mlflow.entities import AssessmentSource
from mlflow.genai.scorers import scorer

QUESTIONS = ["what is mlflow", "what is a trace", "what is a span", "what is wasm"]


@scorer
def answer_length(outputs):
    return len(outputs)


@scorer
def mentions_topic(inputs, outputs, expectations):
    return expectations["topic"] in outputs


def predict_fn(question):
    return f"an answer about {question.split()[-1]}"


TEMPLATE = "Answer {{question}} in one line."


def register_prompt(tracking_uri, name):
    """Version 1 of a text prompt with a tag and the alias `production`."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.genai.register_prompt(name=name, template=TEMPLATE, commit_message="seed: first",
                                 tags={"team": "qa"})
    mlflow.genai.set_prompt_alias(name, alias="production", version=1)


@mlflow.trace(span_type="RETRIEVER")
def retrieve(question, top_k=2):
    return [f"doc-{i} for {question}" for i in range(top_k)]


@mlflow.trace
def flaky_tool(question):
    raise ValueError(f"tool failed on {question!r}")


@mlflow.trace(span_type="AGENT")
def agent(question):
    try:
        flaky_tool(question)
    except ValueError:
        pass  # the span keeps its exception event and ERROR status
    docs = retrieve(question)
    return {"answer": predict_fn(question), "sources": docs}


def _flush():
    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush:
        flush()


def seed_evaluation_run(tracking_uri, experiment_name, prompt_name):
    register_prompt(tracking_uri, prompt_name)
    mlflow.set_experiment(experiment_name)
    data = [{"inputs": {"question": q}, "expectations": {"topic": q.split()[-1]}} for q in QUESTIONS]

    def prompted(question):
        # Links the prompt version to the run, the trace (tag) and the span (attribute).
        prompt = mlflow.genai.load_prompt(f"prompts:/{prompt_name}/1")
        prompt.format(question=question)
        return predict_fn(question)

    with mlflow.start_run(run_name="genai-eval") as run:
        mlflow.genai.evaluate(data=data, predict_fn=prompted, scorers=[answer_length, mentions_topic])
    _flush()
    return run.info.run_id


def seed_agent_run(tracking_uri, experiment_name, calls=3):
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_name)
    with mlflow.start_run(run_name="genai-agent") as run:
        model = mlflow.initialize_logged_model(name="agent", source_run_id=run.info.run_id)
        mlflow.set_active_model(model_id=model.model_id)
        for q in QUESTIONS[:calls]:
            agent(q)
        _flush()
        trace_id = mlflow.get_last_active_trace_id()
        mlflow.log_feedback(
            trace_id=trace_id, name="helpfulness", value=True, rationale="clear and sourced",
            source=AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com"),
            metadata={"queue": "triage"})
        mlflow.set_trace_tag(trace_id, "triage", "reviewed")
        mlflow.finalize_logged_model(model.model_id, "READY")
    mlflow.clear_active_model()
    _flush()
    return run.info.run_id, model.model_id


if __name__ == "__main__":
    # A process of its own: MLflow's fluent API (set_experiment, active runs and models) keeps
    # process-wide state that must not leak into the tests that run after the seeding.
    uri = sys.argv[1]
    exp = sys.argv[2] if len(sys.argv) > 2 else "genai-source"
    prompt_name = sys.argv[3] if len(sys.argv) > 3 else "genai_qa_prompt"
    eval_run = seed_evaluation_run(uri, exp, prompt_name)
    agent_run, model_id = seed_agent_run(uri, exp)
    print(json.dumps({"eval_run": eval_run, "agent_run": agent_run, "model_id": model_id}))

// Jobs: fine-tuning (with a live loss chart and stop), model import, batch, KB ingestion.
import { call } from "./api.js";
import { lineChart } from "./chart.js";
import { chatModels, modelSelect } from "./models-list.js";
import { append, badge, clear, el, errorBox, when } from "./dom.js";

const ACTIVE = new Set(["InProgress", "Stopping", "Submitted", "Validating", "Scheduled", "IN_PROGRESS", "STARTING", "STOPPING"]);

export function render(root) {
  let stopped = false, selected = null;
  const timers = [];
  const status = el("div");
  const custom = el("tbody"), imports = el("tbody"), batch = el("tbody"), ingestion = el("tbody");
  const detail = el("div", { class: "card", hidden: true, "data-testid": "job-detail" });

  function table(head, body, testid) {
    return el("div", { class: "scroll" }, el("table", { "data-testid": testid },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), body));
  }

  async function refresh() {
    try {
      const out = await call("GET", "/model-customization-jobs?sortOrder=Descending");
      clear(custom).append(...(out.modelCustomizationJobSummaries || []).map((j) => {
        const tr = el("tr", { class: "clickable" + (selected === j.jobArn ? " selected" : ""), "data-job": j.jobName, onclick: () => open(j.jobArn) },
          el("td", {}, j.jobName), el("td", {}, badge(j.status)), el("td", {}, j.baseModelArn.split("/").pop()),
          el("td", {}, j.customModelName || ""), el("td", {}, when(j.creationTime)));
        return tr;
      }));
      clear(status);
    } catch (error) { clear(status).append(errorBox(error)); }
    optional("/model-import-jobs", "modelImportJobSummaries", imports, (j) =>
      [j.jobName, badge(j.status), j.importedModelName || "", when(j.creationTime)]);
    optional("/model-invocation-jobs", "invocationJobSummaries", batch, (j) =>
      [j.jobName, badge(j.status), j.modelId || "", when(j.submitTime),
        ACTIVE.has(j.status) ? el("button", { class: "danger", onclick: () => act("POST", `/model-invocation-job/${encodeURIComponent(j.jobArn)}/stop`) }, "Stop") : ""]);
    ingestionJobs();
  }

  async function optional(path, key, body, cells) {
    try {
      const out = await call("GET", path);
      clear(body).append(...(out[key] || []).map((j) => el("tr", {}, ...cells(j).map((c) => el("td", {}, c)))));
    } catch (error) { clear(body).append(el("tr", {}, el("td", { colspan: 5 }, errorBox(error)))); }
  }

  async function ingestionJobs() {
    try {
      const rows = [];
      const kbs = (await call("POST", "/knowledgebases/", {})).knowledgeBaseSummaries || [];
      for (const kb of kbs) {
        const sources = (await call("POST", `/knowledgebases/${kb.knowledgeBaseId}/datasources/`, {})).dataSourceSummaries || [];
        for (const ds of sources) {
          const base = `/knowledgebases/${kb.knowledgeBaseId}/datasources/${ds.dataSourceId}/ingestionjobs`;
          const jobs = (await call("POST", base + "/", {})).ingestionJobSummaries || [];
          for (const j of jobs) {
            rows.push(el("tr", {}, el("td", {}, kb.name), el("td", {}, ds.name), el("td", {}, badge(j.status)),
              el("td", {}, j.statistics ? `${j.statistics.numberOfNewDocumentsIndexed ?? 0} new, ${j.statistics.numberOfDocumentsFailed ?? 0} failed` : ""),
              el("td", {}, ACTIVE.has(j.status) ? el("button", { class: "danger", onclick: () => act("POST", `${base}/${j.ingestionJobId}/stop`, {}) }, "Stop") : when(j.updatedAt))));
          }
        }
      }
      clear(ingestion).append(...rows);
    } catch (error) { clear(ingestion).append(el("tr", {}, el("td", { colspan: 5 }, errorBox(error)))); }
  }

  async function act(method, path, body) {
    try { await call(method, path, body); refresh(); } catch (error) { clear(status).append(errorBox(error)); }
  }

  async function open(arn) {
    selected = arn;
    detail.hidden = false;
    for (const tr of custom.querySelectorAll("tr")) tr.classList.remove("selected");
    await showDetail(arn);
  }

  async function showDetail(arn) {
    if (stopped || selected !== arn) return;
    const id = encodeURIComponent(arn);
    try {
      const [job, { steps }] = await Promise.all([
        call("GET", `/model-customization-jobs/${id}`),
        call("GET", `/console/api/customization-steps?jobIdentifier=${id}`),
      ]);
      if (selected !== arn) return;
      const points = steps.map((s) => [s.step, s.trainingLoss]);
      const last = steps[steps.length - 1];
      const stop = el("button", { class: "danger", "data-testid": "stop-job", onclick: () => act("POST", `/model-customization-jobs/${id}/stop`) }, "Stop job");
      append(clear(detail), [
        el("h2", {}, job.jobName, " ", badge(job.status)),
        el("div", { class: "muted" }, `${job.customizationType} of ${job.baseModelArn.split("/").pop()} → ${job.outputModelName}`),
        job.failureMessage ? errorBox(new Error(job.failureMessage)) : null,
        el("p", { "data-testid": "loss-summary" }, last ? `step ${last.step} · epoch ${last.epoch} · training loss ${last.trainingLoss.toFixed(4)}` : "no training steps yet"),
        el("div", { "data-testid": "loss-chart", "data-points": String(points.length) },
          lineChart([{ name: "training loss", points }], { label: "training loss by step", xFormat: (x) => (Number.isInteger(x) ? x : ""), yFormat: (y) => y.toFixed(2) })),
        ACTIVE.has(job.status) ? stop : null,
        job.outputModelArn ? el("p", {}, "Model: ", el("code", {}, job.outputModelArn)) : null]);
      if (ACTIVE.has(job.status)) timers.push(setTimeout(() => showDetail(arn), 1000));
    } catch (error) { clear(detail).append(errorBox(error)); }
  }

  // A new fine-tuning job: the same CreateModelCustomizationJob any client sends.
  const f = {
    jobName: el("input", { id: "job-name", required: true, pattern: "[a-zA-Z0-9](-*[a-zA-Z0-9\\+\\-\\.])*", "data-testid": "job-name" }),
    modelName: el("input", { id: "model-name", required: true }),
    train: el("input", { id: "train-uri", required: true, placeholder: "s3://bucket/train.jsonl or file:///path/train.jsonl", "data-testid": "train-uri" }),
    output: el("input", { id: "output-uri", required: true, placeholder: "s3://bucket/out/ or file:///path/out/", "data-testid": "output-uri" }),
    type: el("select", { id: "ctype" }, el("option", { value: "FINE_TUNING" }, "Fine-tuning"), el("option", { value: "CONTINUED_PRE_TRAINING" }, "Continued pre-training")),
    epochs: el("input", { id: "epochs", type: "number", min: "1", value: "2" }),
    batchSize: el("input", { id: "batch-size", type: "number", min: "1", value: "8" }),
    lr: el("input", { id: "lr", value: "0.0002" }),
    maxLen: el("input", { id: "max-len", type: "number", min: "16", value: "512" }),
  };
  const baseBox = el("div");
  const createStatus = el("div");
  chatModels().then((models) => baseBox.append(modelSelect(models.filter((m) => m.kind === "catalog"), null, { id: "base-model", "data-testid": "base-model" })))
    .catch((error) => baseBox.append(errorBox(error)));
  const form = el("form", { class: "card" }, el("h2", {}, "New fine-tuning job"),
    el("div", { class: "row" }, el("div", {}, el("label", { for: "job-name" }, "Job name"), f.jobName),
      el("div", {}, el("label", { for: "model-name" }, "Custom model name"), f.modelName),
      el("div", {}, el("label", { for: "base-model" }, "Base model"), baseBox)),
    el("div", { class: "row" }, el("div", {}, el("label", { for: "train-uri" }, "Training data (JSONL)"), f.train),
      el("div", {}, el("label", { for: "output-uri" }, "Output location"), f.output)),
    el("div", { class: "row" }, el("div", {}, el("label", { for: "ctype" }, "Type"), f.type),
      el("div", {}, el("label", { for: "epochs" }, "Epochs"), f.epochs), el("div", {}, el("label", { for: "batch-size" }, "Batch size"), f.batchSize),
      el("div", {}, el("label", { for: "lr" }, "Learning rate"), f.lr), el("div", {}, el("label", { for: "max-len" }, "Max sequence length"), f.maxLen)),
    el("p", {}, el("button", { type: "submit", "data-testid": "create-job" }, "Start job")), createStatus);
  f.jobName.addEventListener("input", () => { if (!f.modelName.dataset.touched) f.modelName.value = f.jobName.value ? f.jobName.value + "-model" : ""; });
  f.modelName.addEventListener("input", () => { f.modelName.dataset.touched = "1"; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(createStatus);
    const base = form.querySelector("#base-model");
    try {
      const out = await call("POST", "/model-customization-jobs", {
        jobName: f.jobName.value, customModelName: f.modelName.value, roleArn: "arn:aws:iam::000000000000:role/outcrop-console",
        baseModelIdentifier: base ? base.value : "", customizationType: f.type.value,
        trainingDataConfig: { s3Uri: f.train.value }, outputDataConfig: { s3Uri: f.output.value },
        hyperParameters: { epochCount: f.epochs.value, batchSize: f.batchSize.value, learningRate: f.lr.value, maxSequenceLength: f.maxLen.value },
      });
      createStatus.append(el("p", { class: "ok" }, "Started ", out.jobArn));
      await refresh();
      open(out.jobArn);
    } catch (error) { createStatus.append(errorBox(error)); }
  });

  root.append(el("h1", {}, "Jobs"), status,
    el("div", { class: "card" }, el("h2", {}, "Model customization"),
      table(["Job", "Status", "Base model", "Custom model", "Created"], custom, "customization-jobs")),
    detail, form,
    el("div", { class: "card" }, el("h2", {}, "Model import"), table(["Job", "Status", "Model", "Created"], imports, "import-jobs")),
    el("div", { class: "card" }, el("h2", {}, "Batch inference"), table(["Job", "Status", "Model", "Submitted", ""], batch, "batch-jobs")),
    el("div", { class: "card" }, el("h2", {}, "Knowledge base ingestion"), table(["Knowledge base", "Data source", "Status", "Documents", ""], ingestion, "ingestion-jobs")));
  refresh();
  const poll = setInterval(refresh, 3000);
  return () => { stopped = true; clearInterval(poll); timers.forEach(clearTimeout); };
}

// A form generated from a JSON schema (the training config, from /openapi.json), so a new config
// field appears in the console without touching it. Only values that differ from the schema's
// defaults are sent: the trainer fills in the rest, and another loss's parameters stay unset.
import { h } from "./dom.js";

/** Resolve "$ref": "#/components/schemas/X" against the OpenAPI document. */
export function resolveRef(spec, schema) {
  let out = schema;
  while (out && out.$ref) {
    out = out.$ref
      .replace(/^#\//, "")
      .split("/")
      .reduce((node, part) => node[part], spec);
  }
  return out;
}

/** Split anyOf into its non-null variants and whether null is allowed. */
function variantsOf(spec, prop) {
  const list = (prop.anyOf || prop.oneOf || [prop]).map((v) => resolveRef(spec, v));
  return { nullable: list.some((v) => v.type === "null"), variants: list.filter((v) => v.type !== "null") };
}

const INT_LIST = /^\s*\d+(\s*,\s*\d+)*\s*$/;

/**
 * Build the form's fields. `custom` maps a field name to (name, prop, {id}) => {control, input?, read}, for
 * fields the schema cannot describe well enough (the data set). `primary` fields come first; the
 * others go in a collapsed "More settings" group.
 */
export function schemaFields(spec, schemaName, { custom = {}, primary = [] } = {}) {
  const schema = resolveRef(spec, spec.components.schemas[schemaName]);
  const fields = new Map();
  for (const [name, prop] of Object.entries(schema.properties)) {
    fields.set(name, buildField(spec, name, prop, custom[name]));
  }
  const main = primary.filter((n) => fields.has(n)).map((n) => fields.get(n).el);
  const rest = [...fields.keys()].filter((n) => !primary.includes(n)).map((n) => fields.get(n).el);
  const element = h(
    "div",
    { class: "schema-form" },
    h("div", { class: "field-grid" }, main),
    h(
      "details",
      { class: "more" },
      h("summary", {}, `More settings (${rest.length})`),
      h("div", { class: "field-grid" }, rest),
    ),
  );

  /** The config to send: every field that differs from its default. Throws on a malformed value. */
  function read() {
    const out = {};
    for (const [name, field] of fields) {
      const value = field.read();
      if (value !== undefined) out[name] = value;
    }
    return out;
  }

  /**
   * Mark the fields an error names: a 422's list (loc ["body", field]) or a "field: message" string
   * (the service's 400/409 answers). Returns the messages tied to no field; focuses the first marked one.
   */
  function showErrors(detail) {
    for (const field of fields.values()) field.setError(null);
    const loose = [];
    const marked = [];
    const errors = typeof detail === "string" ? [{ loc: [detail.split(":")[0]], msg: detail }] : detail;
    for (const err of Array.isArray(errors) ? errors : []) {
      const loc = (err.loc || []).filter((p) => p !== "body");
      const field = fields.get(loc[0]);
      if (field) {
        field.setError(typeof detail === "string" ? err.msg.slice(loc[0].length + 1).trim() : err.msg);
        marked.push(field);
      } else loose.push(err.msg);
    }
    if (marked.length) marked[0].focus();
    return { loose, marked: marked.length };
  }

  return { element, read, showErrors, fields };
}

function buildField(spec, name, prop, customBuilder) {
  const id = `f-${name}`;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const { nullable, variants } = variantsOf(spec, prop);
  const main = variants[0] || {};
  const title = prop.title || name;
  const hasDefault = Object.hasOwn(prop, "default");
  const fallback = hasDefault ? prop.default : null;
  let control;
  let input; // the element that takes focus and carries the aria attributes
  let readValue;

  if (customBuilder) {
    ({ control, input, read: readValue } = customBuilder(name, prop, { id }));
  } else if (main.enum) {
    control = h(
      "select",
      { id, name },
      nullable || !hasDefault ? h("option", { value: "" }, "(default)") : null,
      main.enum.map((v) => h("option", { value: v, selected: v === fallback }, String(v))),
    );
    readValue = () => (control.value === "" ? undefined : control.value);
  } else if (main.type === "boolean") {
    control = h("input", { id, name, type: "checkbox", checked: fallback === true });
    readValue = () => control.checked;
  } else if (main.type === "integer" || main.type === "number") {
    control = h("input", {
      id,
      name,
      type: "number",
      inputmode: main.type === "integer" ? "numeric" : "decimal",
      step: main.type === "integer" ? 1 : "any",
      min: main.minimum,
      max: main.maximum,
      value: fallback ?? "",
      placeholder: hasDefault ? undefined : "default",
    });
    readValue = () => {
      if (control.value.trim() === "") return undefined;
      const value = Number(control.value);
      if (!Number.isFinite(value)) throw new Error(`${name}: not a number`);
      return value;
    };
  } else if (main.type === "array") {
    control = h("input", {
      id,
      name,
      type: "text",
      inputmode: "numeric",
      pattern: INT_LIST.source,
      placeholder: hasDefault ? undefined : "default",
      value: Array.isArray(fallback) ? fallback.join(", ") : "",
    });
    readValue = () => {
      const text = control.value.trim();
      if (text === "") return undefined;
      if (!INT_LIST.test(text)) throw new Error(`${name}: comma-separated whole numbers, e.g. 256, 128`);
      return text.split(",").map((v) => Number(v.trim()));
    };
  } else {
    control = h("input", {
      id,
      name,
      type: "text",
      maxlength: main.maxLength, // no HTML pattern: the service checks it and names the field

      value: typeof fallback === "string" ? fallback : "",
      placeholder: hasDefault ? undefined : "optional",
    });
    readValue = () => (control.value.trim() === "" ? undefined : control.value.trim());
  }
  input ??= control;
  input.setAttribute("aria-describedby", `${hintId} ${errorId}`);

  const error = h("span", { id: errorId, class: "field-error", "aria-live": "polite" });
  const hint = h(
    "span",
    { id: hintId, class: "hint" },
    prop.description || "",
    hasDefault ? ` (default ${JSON.stringify(prop.default)})` : "",
  );
  const isCheckbox = input.type === "checkbox";
  const el = h(
    "div",
    { class: `field${isCheckbox ? " field-check" : ""}`, dataset: { field: name } },
    isCheckbox
      ? [control, h("label", { for: id }, title)]
      : [h("label", { for: id }, title, " ", h("code", {}, name)), control],
    hint,
    error,
  );
  return {
    el,
    read() {
      const value = readValue();
      if (value === undefined) return undefined;
      return hasDefault && JSON.stringify(value) === JSON.stringify(prop.default) ? undefined : value;
    },
    focus() {
      if (el.closest("details")) el.closest("details").open = true;
      input.focus();
    },
    setError(message) {
      error.textContent = message || "";
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    },
  };
}

/*
 * test/mock/embeddings.js
 *
 * The OpenAI embeddings endpoint of the mock LLM provider (POST
 * .../embeddings); server.js requires this file for the route and for
 * embedding lines inside batches.
 *
 * Vectors are deterministic and carry a little meaning, so that a
 * nearest-neighbour query over them has a checkable answer: every word
 * (lower-case letters and digits) has a pseudo-random vector seeded by
 * its FNV-1a hash; a text's vector is the sum of its words' vectors,
 * scaled to length 1.  Texts that share words are near each other.  The
 * first k elements of a vector do not depend on the dimensions asked for
 * (before the scaling), as with OpenAI's shortened embeddings.
 *
 * Request checks, limits and error texts follow OpenAI (PROTOCOLS.md
 * 7.1): input a string or an array of up to 2,048 non-empty strings (or
 * token arrays), each within the model's context length, at most 300,000
 * tokens a request; dimensions only on text-embedding-3 models and
 * later; encoding_format float or base64.  A token is a word here.
 *
 * Standard library only; the hot path builds each reply as one string.
 */
'use strict';

const MAX_INPUTS = 2048;
const MAX_REQUEST_TOKENS = 300000;
const DEFAULT_CONTEXT = 8192;
const INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

/* The faults that shape an embedding reply (server.js adds them to its
 * list of known faults). */
const FAULTS = ['fewer_vectors', 'shuffled', 'non_numeric', 'wrong_dims'];

/* Words of a text: runs of lower-case letters and digits. */
function wordsOf(text) {
	return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
}

/* Tokens of one input (a string, or an array of token ids): at least 1. */
function tokensOf(input) {
	if (Array.isArray(input))
		return Math.max(1, input.length);
	const m = input.match(/\S+/g);
	return Math.max(1, m ? m.length : 0);
}

/* The text of one input (token arrays become their ids joined by spaces). */
function textOf(input) {
	return Array.isArray(input) ? input.join(' ') : input;
}

/* The inputs of a request as an array, or null when "input" is not a
 * string, an array of strings, an array of integers (one token array) or
 * an array of integer arrays. */
function inputsOf(body) {
	const x = body.input;
	if (typeof x === 'string')
		return [x];
	if (!Array.isArray(x))
		return null;
	if (x.length > 0 && x.every((e) => Number.isInteger(e)))
		return [x];
	for (const e of x)
		if (typeof e !== 'string' && !(Array.isArray(e) && e.every((t) => Number.isInteger(t))))
			return null;
	return x;
}

/* The default dimensions of a model: dims= of its directives, 3072 for
 * text-embedding-3-large, 1536 for the others. */
function defaultDims(name, d) {
	if (d && d.dims !== undefined)
		return d.dims;
	return /text-embedding-3-large/.test(name) ? 3072 : 1536;
}

/*
 * Check an embedding request as OpenAI does.  name is the model without
 * its directives, d the directives (or null).  Returns null or
 * { message, param, code } for a 400.
 */
function validate(body, name, d) {
	if (typeof body.model !== 'string' || body.model === '')
		return { message: 'you must provide a model parameter', param: null, code: null };
	if (body.input === undefined || body.input === null)
		return { message: "Missing required parameter: 'input'.", param: 'input', code: 'missing_required_parameter' };
	const inputs = inputsOf(body);
	if (inputs === null || inputs.length === 0 || inputs.length > MAX_INPUTS ||
		inputs.some((e) => e.length === 0))
		return { message: INVALID_INPUT, param: null, code: null };
	const dim = body.dimensions;
	if (dim !== undefined && dim !== null) {
		if (!Number.isInteger(dim))
			return { message: "Invalid type for 'dimensions': expected an integer, but got " +
				typeof dim + ' instead.', param: 'dimensions', code: 'invalid_type' };
		if (/ada-002/.test(name))
			return { message: 'This model does not support specifying dimensions.', param: null, code: null };
		if (dim < 1)
			return { message: "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got " +
				dim + ' instead.', param: 'dimensions', code: 'integer_below_min_value' };
	}
	const ef = body.encoding_format;
	if (ef !== undefined && ef !== null && ef !== 'float' && ef !== 'base64')
		return { message: "Invalid value for 'encoding_format': expected one of float or base64, but got " +
			JSON.stringify(ef) + '.', param: 'encoding_format', code: 'invalid_value' };
	const context = d && d.max_input_tokens !== undefined ? d.max_input_tokens : DEFAULT_CONTEXT;
	let total = 0;
	for (const e of inputs) {
		const n = tokensOf(e);
		if (n > context)
			return { message: "This model's maximum context length is " + context +
				' tokens, however you requested ' + n + ' tokens (' + n +
				' in your prompt; 0 for the completion). Please reduce your prompt; or completion length.',
			param: null, code: null };
		total += n;
	}
	if (total > MAX_REQUEST_TOKENS)
		return { message: 'Requested ' + total + ' tokens, max ' + MAX_REQUEST_TOKENS +
			' tokens per request', param: 'input', code: 'max_tokens_per_request' };
	return null;
}

/* 32-bit FNV-1a of a string's UTF-16 units. */
function fnv1a(s) {
	let h = 0x811c9dc5;
	for (let i = 0; i < s.length; i++) {
		h ^= s.charCodeAt(i);
		h = Math.imul(h, 0x01000193);
	}
	return h >>> 0;
}

/* Word vectors already made, by dimensions and word (a benchmark's texts
 * repeat most of their words); emptied when it holds WORDS_KEPT. */
const WORDS_KEPT = 20000;
const wordCache = new Map();

/* The pseudo-random vector of a word: xorshift32 seeded by its hash,
 * elements in [-1, 1). */
function wordVector(word, dims) {
	const key = dims + ' ' + word;
	let w = wordCache.get(key);
	if (w !== undefined)
		return w;
	w = new Float64Array(dims);
	let s = fnv1a(word) || 1;
	for (let i = 0; i < dims; i++) {
		s ^= s << 13;
		s ^= s >>> 17;
		s ^= s << 5;
		w[i] = (s >>> 0) / 2147483648 - 1;
	}
	if (wordCache.size >= WORDS_KEPT)
		wordCache.clear();
	wordCache.set(key, w);
	return w;
}

/* Add the vector of a word to v. */
function addWord(v, word) {
	const w = wordVector(word, v.length);
	for (let i = 0; i < v.length; i++)
		v[i] += w[i];
}

/* The vector of a text, of length 1, as a Float64Array of dims elements. */
function vectorOf(text, dims) {
	const v = new Float64Array(dims);
	const words = wordsOf(text);
	if (words.length === 0)
		addWord(v, text);
	for (const w of words)
		addWord(v, w);
	let norm = 0;
	for (let i = 0; i < dims; i++)
		norm += v[i] * v[i];
	norm = Math.sqrt(norm) || 1;
	for (let i = 0; i < dims; i++)
		v[i] /= norm;
	return v;
}

/* The text of every number of [-1, 1] with five decimals, by
 * round(x * 1e5) + 1e5: formatting a reply is a table lookup a number
 * (number-to-text conversion made the mock, not the client, the
 * bottleneck of a benchmark). */
const SCALE = 100000;
const NUMBER_TEXT = new Array(2 * SCALE + 1);
for (let i = 0; i <= 2 * SCALE; i++)
	NUMBER_TEXT[i] = String((i - SCALE) / SCALE);

/* A vector (elements within [-1, 1]) as JSON numbers with five decimals. */
function floatsJson(v) {
	const parts = new Array(v.length);
	for (let i = 0; i < v.length; i++)
		parts[i] = NUMBER_TEXT[Math.round(v[i] * SCALE) + SCALE];
	return '[' + parts.join(',') + ']';
}

/* A vector as base64 of little-endian float32 values. */
function floatsBase64(v) {
	return Buffer.from(new Float32Array(v).buffer).toString('base64');
}

/*
 * The reply to a valid embedding request, as JSON text:
 * {"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
 *  "model", "usage": {"prompt_tokens", "total_tokens"}}.
 * faults (a Set) shape it: fewer_vectors leaves out the vector of the
 * faulty input, shuffled sends the data in reverse order (each with its
 * own index), non_numeric puts a string into the faulty input's vector,
 * wrong_dims gives it one element less.  The faulty input is the first
 * one containing d.when, else the last one.
 */
function replyText(body, name, d, faults) {
	const inputs = inputsOf(body);
	const dims = body.dimensions !== undefined && body.dimensions !== null
		? body.dimensions : defaultDims(name, d);
	const b64 = body.encoding_format === 'base64';
	let faulty = inputs.length - 1;
	if (d && d.when !== undefined) {
		const k = inputs.findIndex((e) => textOf(e).includes(d.when));
		if (k >= 0)
			faulty = k;
	}
	let tokens = 0;
	const items = [];
	for (let i = 0; i < inputs.length; i++) {
		tokens += tokensOf(inputs[i]);
		if (i === faulty && faults.has('fewer_vectors'))
			continue;
		let v = vectorOf(textOf(inputs[i]), dims);
		if (i === faulty && faults.has('wrong_dims'))
			v = v.subarray(0, Math.max(0, dims - 1));
		let e = b64 ? JSON.stringify(floatsBase64(v)) : floatsJson(v);
		if (i === faulty && faults.has('non_numeric'))
			e = e.replace(/^\[[^,\]]*/, '["abc"');
		items.push('{"object":"embedding","index":' + i + ',"embedding":' + e + '}');
	}
	if (faults.has('shuffled'))
		items.reverse();
	return '{"object":"list","data":[' + items.join(',') + '],"model":' + JSON.stringify(name) +
		',"usage":{"prompt_tokens":' + tokens + ',"total_tokens":' + tokens + '}}';
}

/* The prompt-like key of an embedding request (for when= and times=):
 * its inputs' texts joined by newlines. */
function keyText(body) {
	const inputs = inputsOf(body);
	return inputs === null ? '' : inputs.map(textOf).join('\n');
}

/* Number of inputs of a valid request (0 when unreadable). */
function inputCount(body) {
	const inputs = inputsOf(body);
	return inputs === null ? 0 : inputs.length;
}

/* Tokens of a valid request. */
function tokenCount(body) {
	const inputs = inputsOf(body);
	return inputs === null ? 0 : inputs.reduce((n, e) => n + tokensOf(e), 0);
}

module.exports = { FAULTS, validate, replyText, keyText, inputCount, tokenCount, vectorOf };

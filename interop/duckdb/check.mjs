// DuckDB side of the interop test (pipeline/duckdb_test.go drives it).
//
//   node check.mjs write PNG_DIR OUT_DIR   -> writes inputs in several layouts with DuckDB
//   node check.mjs verify OUT_DIR          -> reads ninbatch outputs with DuckDB, prints JSON facts
//   node check.mjs sql 'STMT; ...; QUERY'  -> runs the statements, prints the last one's rows as JSON
import { DuckDBInstance } from '@duckdb/node-api';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const [cmd, a, b] = process.argv.slice(2);
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
const q = (s) => s.replaceAll("'", "''");

async function rows(sql) {
  const reader = await con.runAndReadAll(sql);
  return reader.getRowObjectsJson();
}

if (cmd === 'write') {
  const png = q(join(a, '*.png'));
  const out = (n) => q(join(b, n));
  // ids come from the file names (img_00017.png -> 17); a string and a double column pass through
  const base = `SELECT CAST(regexp_extract(filename, 'img_([0-9]+)', 1) AS BIGINT) AS id,
                       'note-' || regexp_extract(filename, 'img_([0-9]+)', 1) AS note,
                       CAST(regexp_extract(filename, 'img_([0-9]+)', 1) AS DOUBLE) / 2 AS score,
                       content FROM read_blob('${png}') ORDER BY id`;
  await con.run(`COPY (SELECT id, note, score, {'bytes': content, 'path': 'x.png'} AS image FROM (${base}))
                 TO '${out('hf_struct.parquet')}' (FORMAT parquet, ROW_GROUP_SIZE 7)`);
  await con.run(`COPY (SELECT id, note, score, content AS image FROM (${base}))
                 TO '${out('binary.parquet')}' (FORMAT parquet, COMPRESSION snappy)`);
  // raw uint8 tensors: a 12x12 gradient that depends on the id
  await con.run(`COPY (SELECT id, note, score,
                   list_transform(range(144), x -> CAST((x + id) % 256 AS UTINYINT)) AS pixels
                 FROM (${base})) TO '${out('raw_u8.parquet')}' (FORMAT parquet, COMPRESSION zstd)`);
  console.log(JSON.stringify({ written: readdirSync(b).sort() }));
} else if (cmd === 'verify') {
  const facts = {};
  for (const f of readdirSync(a).filter((f) => f.endsWith('.parquet')).sort()) {
    const p = q(join(a, f));
    const [r] = await rows(`SELECT CAST(count(*) AS INTEGER) AS n, CAST(count(DISTINCT id) AS INTEGER) AS ids,
        CAST(min(id) AS INTEGER) AS min_id, CAST(max(id) AS INTEGER) AS max_id,
        bool_and(note = 'note-' || lpad(CAST(id AS VARCHAR), 5, '0')) AS notes_ok,
        bool_and(score = id / 2) AS scores_ok,
        CAST(max(abs(list_sum(probs) - 1)) AS DOUBLE) AS max_sum_err,
        bool_and(len(probs) = 4) AS probs_len_ok,
        bool_and(top1 = list_position(probs, list_max(probs)) - 1) AS top1_ok,
        CAST(count(error) AS INTEGER) AS errors,
        min(model_id) = max(model_id) AS one_model,
        bool_and(list_sort(probs, 'DESC')[1] = top1_prob) AS top1_prob_ok
      FROM read_parquet('${p}')`);
    const order = await rows(`SELECT bool_and(id > prev) AS ordered FROM
        (SELECT id, lag(id, 1, -1) OVER () AS prev FROM read_parquet('${p}'))`);
    const meta = await rows(`SELECT decode(key) AS k, decode(value) AS v FROM parquet_kv_metadata('${p}')
        WHERE decode(key) LIKE 'ninbatch.%'`);
    facts[f] = { ...r, ordered: order[0].ordered, metadata_keys: meta.map((m) => m.k).sort() };
  }
  console.log(JSON.stringify(facts));
} else if (cmd === 'sql') {
  // statements separated by ';\n'; the last one's rows are printed
  const stmts = a.split(/;\s*\n/).map((x) => x.trim()).filter((x) => x);
  for (const st of stmts.slice(0, -1)) await con.run(st);
  console.log(JSON.stringify(await rows(stmts[stmts.length - 1])));
} else {
  console.error('usage: node check.mjs write PNG_DIR OUT_DIR | verify OUT_DIR | sql STATEMENTS');
  process.exit(2);
}

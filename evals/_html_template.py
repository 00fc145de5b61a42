# ruff: noqa: E501 - the page is data: its lines are HTML, CSS and script, not Python
"""The report page: HTML, CSS and a small script (no library), filled by :mod:`evals._html`.

Placeholders: ``%TITLE%``, ``%SIMULATED%``, ``%PLOTS%`` (inline SVG figures), ``%DATA%``
(config, headline metrics, the per-sample index) and ``%DETAILS%`` (one gzip+base64
string per sample, decoded when opened).
"""

from __future__ import annotations

__all__ = ["TEMPLATE"]

TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>eval report — %TITLE%</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5rem 2rem;color:#222}
h1{font-size:1.3rem;margin:1rem 0 .3rem} h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.sim{background:#fff3cd;border:1px solid #e0c060;padding:.4rem .7rem;border-radius:4px}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.4rem .7rem;min-width:9rem}
.card b{display:block;font-size:1.15rem}
.plots{display:flex;flex-wrap:wrap;gap:1rem} figure{margin:0;border:1px solid #eee}
figure svg{width:520px;height:auto}
.bar{display:flex;gap:.5rem;align-items:center;margin:.4rem 0}
#box{height:60vh;overflow-y:auto;border:1px solid #ccc;position:relative}
#spacer{position:relative}
.row{position:absolute;left:0;right:0;height:26px;display:grid;
 grid-template-columns:14rem 10rem 3rem 8rem 6rem 9rem 5rem 5rem 3rem 1fr;
 align-items:center;border-bottom:1px solid #f0f0f0;cursor:pointer;white-space:nowrap}
.row>span{overflow:hidden;text-overflow:ellipsis;padding:0 .3rem}
.row:hover{background:#f5f8ff} .row.sel{background:#e3ecff}
.head{position:sticky;top:0;background:#fafafa;font-weight:600;z-index:1;height:26px}
.passed{color:#1a7f37} .failed{color:#c62828} .infra_error{color:#8a6d00}
#detail{border:1px solid #ccc;margin-top:1rem;padding:.5rem 1rem;min-height:4rem}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:.4rem;margin:.2rem 0;max-height:22rem;overflow:auto}
table.checks{border-collapse:collapse} table.checks td{border-bottom:1px solid #eee;padding:.2rem .5rem;vertical-align:top}
.ev{margin:.3rem 0} .ev .k{font-weight:600;margin-right:.4rem}
</style></head><body>
<h1>Eval report — %TITLE%</h1>
%SIMULATED%
<div class="cards" id="cards"></div>
<h2>Plots</h2><div class="plots">%PLOTS%</div>
<h2>Samples</h2>
<div class="bar"><input id="q" placeholder="filter: case, category, error, reason" size="40">
<select id="st"><option value="">all</option><option value="failed">failed</option>
<option value="passed">passed</option><option value="infra_error">infra errors</option></select>
<span id="count"></span></div>
<div id="box"><div class="row head" id="head"></div><div id="spacer"></div></div>
<div id="detail">Click a sample to see its checks and transcript.</div>
<script type="application/json" id="data">%DATA%</script>
<script type="application/json" id="details">%DETAILS%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
let DETAILS = null;
const ROW = 26, box = document.getElementById("box"), spacer = document.getElementById("spacer");
let view = [], sortCol = null, sortDir = 1, selected = -1;
function el(tag, text, cls){const e=document.createElement(tag); if(text!==undefined&&text!==null) e.textContent=String(text); if(cls) e.className=cls; return e;}
function pct(v){return v===null||v===undefined?"—":(v*100).toFixed(1)+"%";}
function cards(){
  const s=D.summary, c=document.getElementById("cards");
  const add=(k,v)=>{const d=el("div",null,"card"); d.append(el("b",v), el("span",k)); c.append(d);};
  add("pass@1", pct(s.pass_at_1)+(s.pass_at_1_ci?" ["+pct(s.pass_at_1_ci[0])+"–"+pct(s.pass_at_1_ci[1])+"]":""));
  for (const [k,v] of Object.entries(s.pass_hat_k||{})) add("pass^"+k, pct(v));
  add("cases × trials", s.cases+" × "+s.trials);
  add("passed / failed", s.passed+" / "+s.failed);
  add("infra errors (not scored)", s.infra_errors);
  add("latency p50 / p95 s", (s.latency_s.p50??0).toFixed(2)+" / "+(s.latency_s.p95??0).toFixed(2));
  add("tokens / sample", Math.round(s.tokens.per_sample));
  add("malformed calls", pct(s.malformed_call_rate)); add("tool errors", pct(s.tool_error_rate));
}
function head(){const h=document.getElementById("head"); D.columns.forEach((c,i)=>{const s=el("span",c); s.onclick=()=>{sortDir=sortCol===i?-sortDir:1; sortCol=i; filter();}; h.append(s);});}
function filter(){
  const q=document.getElementById("q").value.toLowerCase(), st=document.getElementById("st").value;
  view=[]; for(let i=0;i<D.index.length;i++){const r=D.index[i];
    if(st&&r[4]!==st) continue;
    if(q&&!(r[0]+" "+r[3]+" "+r[5]+" "+r[9]).toLowerCase().includes(q)) continue; view.push(i);}
  if(sortCol!==null){const c=sortCol; view.sort((a,b)=>{const x=D.index[a][c],y=D.index[b][c]; return (x<y?-1:x>y?1:0)*sortDir;});}
  document.getElementById("count").textContent=view.length+" of "+D.index.length+" samples";
  spacer.style.height=(view.length*ROW)+"px"; draw();
}
function draw(){
  const first=Math.max(0,Math.floor(box.scrollTop/ROW)-1), n=Math.ceil(box.clientHeight/ROW)+3;
  spacer.replaceChildren();
  for(let k=first;k<Math.min(view.length,first+n);k++){const i=view[k], r=D.index[i];
    const row=el("div",null,"row"+(i===selected?" sel":"")); row.style.top=(k*ROW)+"px";
    r.forEach((v,j)=>row.append(el("span",v,j===4?v:null))); row.title=r[9]; row.onclick=()=>open(i); spacer.append(row);}
}
async function decode(i){
  if(DETAILS===null) DETAILS=JSON.parse(document.getElementById("details").textContent);
  const bytes=Uint8Array.from(atob(DETAILS[i]),c=>c.charCodeAt(0));
  const stream=new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}
async function open(i){
  selected=i; draw(); history.replaceState(null,"","#sample="+i); const d=await decode(i), out=document.getElementById("detail"); out.replaceChildren();
  out.append(el("h2",d.sample));
  if(d.planned_corruption) out.append(el("p","simulated corruption: "+d.planned_corruption));
  out.append(el("div","input:","k")); out.append(el("pre", typeof d.input==="string"?d.input:JSON.stringify(d.input,null,1)));
  const t=el("table",null,"checks");
  for(const c of d.checks||[]){const tr=el("tr"); tr.append(el("td",c.passed?"✓":"✗",c.passed?"passed":"failed"), el("td",c.check), el("td",c.reason), el("td",c.error_type||"")); t.append(tr);}
  out.append(el("h3","checks")); out.append(t);
  for(const x of d.infra||[]) out.append(el("p","infrastructure error (attempt "+x.attempt+"): "+x.error_type+": "+x.message,"infra_error"));
  out.append(el("h3","transcript")); for(const e of d.events||[]) out.append(event(e));
  for(const [svc,reqs] of Object.entries(d.http||{})){out.append(el("h3","requests to "+svc));
    for(const r of reqs) out.append(el("pre", r.method+" "+r.path+" → "+r.status+(r.body?"\n"+r.body:"")));}
  out.append(el("h3","result")); out.append(el("pre",JSON.stringify(d.result,null,1)));
}
function event(e){
  const d=el("div",null,"ev"), clip=s=>{s=String(s??""); return s.length>4000?s.slice(0,4000)+"…":s;};
  if(e.kind==="step"){const g=e.generation; d.append(el("span","model step "+e.step,"k"), el("span",g.usage.completion_tokens+" tokens, ttft "+(g.timings.ttft_s*1000).toFixed(0)+" ms"), el("pre",clip(g.text)));
    for(const m of g.errors||[]) d.append(el("div","malformed call: "+m.reason,"failed"));}
  else if(e.kind==="tool_call") d.append(el("span","call","k"), el("span",e.call.name+"("+JSON.stringify(e.call.arguments)+")"));
  else if(e.kind==="tool_result") d.append(el("span","result "+e.result.status+(e.result.error?" ("+e.result.error+")":""),"k "+(e.result.status==="ok"?"passed":"failed")), el("pre",clip(e.result.content)));
  else if(e.kind==="repair") d.append(el("span","repair","k failed"), el("span",e.reasons.join("; ")));
  else if(e.kind==="final") d.append(el("span","final: "+e.result.status,"k"), el("pre",clip(typeof e.result.answer==="string"?e.result.answer:JSON.stringify(e.result.answer,null,1))));
  else if(e.kind==="error") d.append(el("span","error","k failed"), el("span",e.error_type+": "+e.message));
  else d.append(el("span",e.kind,"k"));
  return d;
}
cards(); head(); filter();
const linked=location.hash.match(/^#sample=(\d+)$/); if(linked) open(+linked[1]);
box.addEventListener("scroll",()=>requestAnimationFrame(draw));
document.getElementById("q").addEventListener("input",filter);
document.getElementById("st").addEventListener("change",filter);
</script></body></html>
"""

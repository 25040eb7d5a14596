package asyncapi

import (
	"bytes"
	"html/template"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/invopop/jsonschema"

	"github.com/orderflow/orderflow/outbox"
)

// Page returns the document rendered as one self-contained HTML page
// (served beside the REST API's docs): no script, no remote asset.
var Page = sync.OnceValues(func() ([]byte, error) {
	doc, err := Generate()
	if err != nil {
		return nil, err
	}
	view := pageView{Doc: doc}
	for _, topic := range append(slices.Clone(outbox.Topics), outbox.PoisonTopic) {
		ch := doc.Channels[topic]
		cv := channelView{Name: topic, Channel: ch}
		for _, name := range slices.Sorted(maps.Keys(ch.Messages)) {
			m := doc.Components.Messages[name]
			cv.Messages = append(cv.Messages, messageView{Message: m, Headers: fields(m.Headers), Fields: fields(m.Payload)})
		}
		view.Channels = append(view.Channels, cv)
	}
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, view); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
})

type pageView struct {
	Doc      *Document
	Channels []channelView
}

type channelView struct {
	Name string
	Channel
	Messages []messageView
}

type messageView struct {
	Message
	Headers, Fields []field
}

// field is one row of a schema's table: a property at any depth.
type field struct {
	Path, Type, Constraint, Description string
	Required, Personal                  bool
}

// fields flattens an object schema into rows, nested properties by path.
func fields(s *jsonschema.Schema) []field {
	var out []field
	var walk func(s *jsonschema.Schema, prefix string)
	walk = func(s *jsonschema.Schema, prefix string) {
		if s == nil || s.Properties == nil {
			return
		}
		for p := s.Properties.Oldest(); p != nil; p = p.Next() {
			f, path := p.Value, prefix+p.Key
			typ := f.Type
			if f.Type == "array" && f.Items != nil {
				typ = "array of " + f.Items.Type
			}
			if typ == "" {
				typ = "any JSON"
			}
			c := f.Format
			switch {
			case f.Const != nil:
				c = "= " + toString(f.Const)
			case len(f.Enum) > 0:
				var vals []string
				for _, e := range f.Enum {
					vals = append(vals, toString(e))
				}
				c = "one of " + strings.Join(vals, ", ")
			case f.Pattern != "":
				c = "pattern " + f.Pattern
			}
			out = append(out, field{Path: path, Type: typ, Constraint: c, Description: f.Description,
				Required: slices.Contains(s.Required, p.Key), Personal: f.Extras["x-personal"] == true})
			walk(f, path+".")
			if f.Items != nil {
				walk(f.Items, path+"[].")
			}
		}
	}
	walk(s, "")
	return out
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// paragraphs renders a description: blank lines part paragraphs, and a
// paragraph's leading **title.** is bold.
func paragraphs(s string) template.HTML {
	var b strings.Builder
	for _, p := range strings.Split(s, "\n\n") {
		b.WriteString("<p>")
		if rest, ok := strings.CutPrefix(p, "**"); ok {
			if title, body, ok := strings.Cut(rest, "**"); ok {
				b.WriteString("<strong>" + template.HTMLEscapeString(title) + "</strong>")
				p = body
			}
		}
		b.WriteString(template.HTMLEscapeString(p))
		b.WriteString("</p>\n")
	}
	return template.HTML(b.String())
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"paragraphs": paragraphs}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Doc.Info.Title}}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
h1,h2,h3{line-height:1.2} h2{margin-top:2.5rem;border-bottom:2px solid #ddd} h3{margin-top:1.8rem}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:14px}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f7f7f7} .personal{background:#fff4e5} .tag{font-size:12px;padding:0 .4em;border-radius:3px;background:#eee}
.tag.personal{background:#f7c98b} nav a{margin-right:1rem}
</style></head><body>
<h1>{{.Doc.Info.Title}}</h1>
<p>AsyncAPI {{.Doc.AsyncAPI}} document: <a href="/asyncapi.json">/asyncapi.json</a>. The REST API: <a href="/docs">/docs</a>.</p>
<nav>{{range .Channels}}<a href="#{{.Name}}">{{.Name}}</a>{{end}}</nav>
{{paragraphs .Doc.Info.Description}}
<h2>Servers</h2>
<table><tr><th>name</th><th>protocol</th><th>host</th><th>what</th></tr>
{{range $name, $s := .Doc.Servers}}<tr><td><code>{{$name}}</code></td><td>{{$s.Protocol}}</td><td><code>{{$s.Host}}</code>{{range $v, $var := $s.Variables}} ({{$v}}: <code>{{$var.Default}}</code>){{end}}</td><td>{{$s.Title}}: {{$s.Description}}</td></tr>
{{end}}</table>
{{range .Channels}}
<h2 id="{{.Name}}">{{.Name}}</h2>
<p>{{.Description}}</p>
<table>
<tr><th>delivery</th><td>{{.Delivery.Guarantee}}, {{.Delivery.Order}}; deduplicate by the {{.Delivery.DeduplicateBy}}</td></tr>
<tr><th>watermill-sql</th><td>table <code>{{.WatermillSQL.MessagesTable}}</code>, offsets <code>{{.WatermillSQL.OffsetsTable}}</code>; <code>{{.WatermillSQL.SchemaAdapter}}</code> and <code>{{.WatermillSQL.OffsetsAdapter}}</code> of <code>{{.WatermillSQL.Package}}</code>, schema initialisation off</td></tr>
<tr><th>orderflow's consumer groups</th><td>{{range .WatermillSQL.ReservedGroups}}<code>{{.}}</code> {{end}}(choose a name of your own)</td></tr>
{{with .NATS}}<tr><th>NATS JetStream</th><td>subject <code>{{.Subject}}</code>, stream <code>{{.Stream}}</code>, headers <code>{{.MsgIDHeader}}</code> and <code>_watermill_message_uuid</code> = message UUID besides the metadata; stream limits: max age {{.Limits.MaxAge}}, max bytes {{.Limits.MaxBytes}}, duplicate window {{.Limits.DuplicateWindow}} by default</td></tr>{{end}}
</table>
{{range .Messages}}
<h3 id="{{.Name}}"><code>{{.Name}}</code>{{if .SchemaVersion}} <span class="tag">schema version {{.SchemaVersion}}</span>{{end}}</h3>
<p>{{.Summary}}</p>
<table><tr><th>header</th><th>value</th><th>required</th><th>description</th></tr>
{{range .Headers}}<tr><td><code>{{.Path}}</code></td><td>{{.Type}} {{.Constraint}}</td><td>{{if .Required}}yes{{end}}</td><td>{{.Description}}</td></tr>
{{end}}</table>
<table><tr><th>payload field</th><th>type</th><th>required</th><th>notes</th></tr>
{{range .Fields}}<tr{{if .Personal}} class="personal"{{end}}><td><code>{{.Path}}</code></td><td>{{.Type}}</td><td>{{if .Required}}yes{{end}}</td><td>{{if .Personal}}<span class="tag personal">personal, sealed</span> {{else}}{{.Constraint}} {{end}}{{.Description}}</td></tr>
{{else}}<tr><td colspan="4">{{if .Payload.Description}}{{.Payload.Description}}{{else}}no fields: the event itself is the fact{{end}}</td></tr>
{{end}}</table>
{{end}}{{end}}
</body></html>
`))

// The link check behind .ci/check-links. Parses each Markdown file named on
// the command line as GitHub does (remark with GFM) and lets
// remark-validate-links check every relative link, image and reference
// definition: the file or directory it names exists, and its #fragment is a
// heading of the file it points into (GitHub's slugs, by github-slugger:
// lowercase, punctuation dropped, spaces to '-', duplicates '-1', '-2', ...)
// or an explicit id there. The files go through one unified-engine run, as
// remark's CLI does, so anchors into other files are checked too. Links with a
// scheme (https:, mailto:, ...) are not checked: CI has no internet.
//
//   node .ci/links/check.mjs TOOLS_DIR REPO_ROOT FILE.md...
//
// TOOLS_DIR holds the npm install of this directory's package.json. Prints
// one `FILE:LINE: broken link TARGET (reason)` per broken link and exits 1 if
// there is any; exits 2 if a file could not be read or parsed; otherwise
// prints a one-line summary and exits 0.

import {createRequire} from 'node:module'
import path from 'node:path'
import {pathToFileURL} from 'node:url'

const [toolsDir, repoRoot, ...files] = process.argv.slice(2)
if (!toolsDir || !repoRoot) {
  console.error('usage: check.mjs TOOLS_DIR REPO_ROOT FILE.md...')
  process.exit(2)
}
const root = path.resolve(repoRoot)

// The tools live in the cache, not next to this script: resolve them from
// there (each package's `exports` is a plain path, so require.resolve finds
// the ES module's file without loading it).
const requireTool = createRequire(path.join(path.resolve(toolsDir), 'package.json'))
const tool = (name) => import(pathToFileURL(requireTool.resolve(name)).href)
const {remark} = await tool('remark')
const {default: remarkGfm} = await tool('remark-gfm')
const {default: remarkValidateLinks} = await tool('remark-validate-links')
const {engine} = await tool('unified-engine')

const SOURCE = 'remark-validate-links'
const EXTERNAL = /^([a-z][a-z0-9+.-]*:|\/\/)/i

/** Every node, depth first. */
function* allNodes(node) {
  yield node
  for (const child of node.children || []) yield* allNodes(child)
}

const HTML_ANCHOR = /<[a-z][^>]*?\s(?:id|name)\s*=\s*["']([^"']+)["']/i

// Runs before remark-validate-links. Remembers each link's target as written,
// by its start offset, so that a message (which carries only the node's
// position) can name it, and counts the links that are checked. An HTML
// element's `id` or `name` (`<a id="x"></a>`, the first one in an HTML node)
// is an anchor on GitHub too: it is handed to the plugin the way it takes
// explicit ids.
function prepare() {
  return (tree, file) => {
    const targets = new Map()
    let local = 0
    for (const node of allNodes(tree)) {
      const isLink = node.type === 'link' || node.type === 'image' || node.type === 'definition'
      if (isLink && node.url) {
        targets.set(node.position?.start.offset, node.url)
        if (!EXTERNAL.test(node.url)) local += 1
      } else if (node.type === 'html') {
        const anchor = HTML_ANCHOR.exec(node.value)
        if (anchor) node.data = {...node.data, hProperties: {id: anchor[1]}}
      }
    }
    file.data.linkTargets = targets
    file.data.localLinks = local
  }
}

// The plugins go to the engine, not onto the processor: the engine hands
// them the set of all files, which remark-validate-links needs to check
// anchors into other files.
const plugins = [
  [remarkGfm],
  [prepare],
  [
    remarkValidateLinks,
    {
      // No remote: links are checked against the work tree alone.
      repository: false,
      root,
      // GitHub's conventions without its host: a link starting with `/` is
      // from the repository's root, `#L12` line anchors are not headings. The
      // host and prefix are placeholders that no real link uses.
      urlConfig: {
        hostname: 'repository.invalid',
        prefix: '/-/blob/',
        headingPrefix: '#',
        lines: true,
        resolveAbsolutePathsInRepo: true
      }
    }
  ]
]

engine(
  {
    processor: remark(),
    plugins,
    files: files.map((f) => path.resolve(root, f)),
    cwd: root,
    extensions: ['md'],
    // Check only: no output, no configuration or ignore files from the tree.
    out: false,
    output: false,
    detectConfig: false,
    detectIgnore: false,
    silentlyIgnore: false,
    reporter: () => '',
    color: false
  },
  (error, _code, context) => {
    if (error) {
      console.error(`check-links: ${error.message}`)
      process.exit(2)
    }
    const asked = new Set(files.map((f) => path.resolve(root, f)))
    let broken = 0
    let failed = 0
    let links = 0
    let checked = 0
    for (const file of context.files) {
      const absolute = path.resolve(file.cwd, file.path)
      // Files the plugin opened only to read their headings are not ours to report.
      if (!asked.has(absolute)) continue
      checked += 1
      links += file.data.localLinks || 0
      const name = path.relative(root, absolute)
      const messages = [...file.messages].sort((a, b) => (a.line || 0) - (b.line || 0))
      for (const message of messages) {
        if (message.source?.startsWith(SOURCE)) {
          const start = message.place && 'start' in message.place ? message.place.start : message.place
          const target = file.data.linkTargets?.get(start?.offset) ?? '?'
          const reason = message.reason.replace(/^Cannot find /, 'no ').replaceAll('`', '')
          console.log(`${name}:${message.line}: broken link ${target} (${reason})`)
          broken += 1
        } else if (message.fatal) {
          console.log(`${name}:${message.line || 1}: cannot check: ${message.reason}`)
          failed += 1
        }
      }
    }
    if (failed > 0 || checked !== asked.size) {
      console.log(`check-links: ${asked.size - checked + failed} of ${asked.size} Markdown files could not be checked`)
      process.exit(2)
    }
    if (broken > 0) {
      console.log(`check-links: ${broken} broken of ${links} relative links in ${checked} Markdown files`)
      process.exit(1)
    }
    console.log(`check-links: ${links} relative links in ${checked} Markdown files, all resolve`)
  }
)

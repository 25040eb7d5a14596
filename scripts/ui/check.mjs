// Opens a saga's page in the Temporal Web UI (headless Chromium) and prints
// the user metadata the UI shows: the static summary and the current
// details, each rendered by the UI in its own frame. Exits 1 when a frame
// lacks its expected text. Usage: node check.mjs UI_URL WORKFLOW_ID SUMMARY_TEXT DETAILS_TEXT [SCREENSHOT]
import { chromium } from 'playwright-core';

const [ui, workflowID, wantSummary, wantDetails, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let ok = true;
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await page.goto(`${ui}/namespaces/default/workflows/${encodeURIComponent(workflowID)}`);
  await page.getByText('User Metadata').click();
  for (const [frame, want] of [['#user-metadata-summary', wantSummary], ['#user-metadata-current-details', wantDetails]]) {
    const body = page.frameLocator(frame).locator('body');
    await body.waitFor({ timeout: 30000 });
    const text = (await body.innerText()).replace(/\s+/g, ' ').trim();
    const found = text.includes(want);
    ok &&= found;
    console.log(`${found ? 'ok  ' : 'FAIL'} ${workflowID} ${frame}: ${JSON.stringify(text)} (want ${JSON.stringify(want)})`);
  }
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);

// Seed 003's "Example: Streaming Chat", kept as written (only the URL, the ids and the two marked lines differ),
// run by tests/control/test_tutor_node.py with node against the live server.
const [base, orgId, roomId] = process.argv.slice(2);
let usage = null; // added: keep what the seed's "Handle usage statistics" branch sees

const response = await fetch(`${base}/v1/ai-tutor/chat/stream`, {
  method: 'POST',
  headers: {
    'VF-ORG-ID': orgId,
    'Content-Type': 'application/json'
  },
  body: JSON.stringify({
    roomId: roomId,
    studentUid: 'student-789',
    organizationId: orgId,
    text: 'What does this equation mean?',
    responseModality: 'text'
  })
});
const reader = response.body.getReader();
const decoder = new TextDecoder();
let fullText = '';
while (true) {
  const { done, value } = await reader.read();
  if (done) break;
  const chunk = decoder.decode(value);
  const lines = chunk.split('\n');
  for (const line of lines) {
    if (line.startsWith('data: ')) {
      const dataStr = line.replace('data: ', '').trim();
      if (dataStr === '[DONE]') continue;
      try {
        const parsed = JSON.parse(dataStr);
        if (parsed.text) {
          fullText += parsed.text;
          // Update UI with streaming text
        }
        if (parsed.usage) {
          // Handle usage statistics
          usage = parsed.usage; // added
        }
      } catch (e) {
        // Ignore parse errors
      }
    }
  }
}
console.log(JSON.stringify({ status: response.status, contentType: response.headers.get('content-type'), fullText, usage }));
